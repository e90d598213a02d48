package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
	"github.com/skiff-sh/skiff/server/storage/bolt"
)

// BenchmarkCreateParallel measures conditional creates (the Kubernetes create
// path) from many concurrent writers, with fsync on.
func BenchmarkCreateParallel(b *testing.B) {
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(b.TempDir(), "state.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	value := make([]byte, 300)
	var n atomic.Int64
	b.SetParallelism(8) // 16 writers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			key := []byte(fmt.Sprintf("/registry/configmaps/bench/cm-%d", n.Add(1)))
			_, err := be.Txn(ctx, []storage.Compare{{Key: key, Target: storage.CompareMod, Result: storage.CompareEqual}},
				[]storage.Op{{Type: storage.OpPut, Key: key, Value: value}}, []storage.Op{{Type: storage.OpRange, Key: key}})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWritesDuringCompaction compacts the history of 20,000 keys
// written 6 times each (~a 30,000-pod run's pods, at a fifth of the value
// size) while 16 writers keep writing with fsync on, and reports the
// writers' latency during the compaction (p50, p99, max) and its duration.
// Deleted in one transaction, the history held every write back for all
// of it; in batches (Config.CompactBatch) a write waits for one batch at
// most. One compaction per iteration (the latencies are the last one's):
// run with -benchtime=3x.
func BenchmarkWritesDuringCompaction(b *testing.B) {
	const keys, versions, writers = 20000, 6, 16
	var lat []time.Duration
	var took time.Duration
	for range b.N {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "state.db")
		be, err := bolt.Open(bolt.Config{Path: path, NoSync: true, ReleaseInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		value := make([]byte, 300)
		put := func(key []byte) {
			if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: key, Value: value}}, nil); err != nil {
				b.Error(err)
			}
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < keys*versions; i = next.Add(1) - 1 {
					put(fmt.Appendf(nil, "/registry/pods/bench/pod-%05d", i%keys))
				}
			})
		}
		wg.Wait()
		if err := be.Close(); err != nil {
			b.Fatal(err)
		}
		if be, err = bolt.Open(bolt.Config{Path: path, ReleaseInterval: -1}); err != nil {
			b.Fatal(err)
		}
		to := be.CurrentRevision()
		var stop atomic.Bool
		var mu sync.Mutex
		for w := range writers {
			wg.Go(func() {
				for i := 0; !stop.Load(); i++ {
					t0 := time.Now()
					put(fmt.Appendf(nil, "/registry/leases/bench/%d-%d", w, i%50))
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
			})
		}
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		lat = lat[:0]
		mu.Unlock()
		b.StartTimer()
		t0 := time.Now()
		if err := be.Compact(ctx, to); err != nil {
			b.Fatal(err)
		}
		took += time.Since(t0)
		b.StopTimer()
		stop.Store(true)
		wg.Wait()
		if err := be.Close(); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(lat[len(lat)/2]), "write-p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "write-p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "write-max-ms")
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "compact-s")
}

// BenchmarkCountOnly counts a prefix of 10,000 keys written 5 times each
// (the API server's once-a-minute object count of a resource it keeps no
// watch cache for), against the same count by walking the history.
func BenchmarkCountOnly(b *testing.B) {
	const keys, versions = 10000, 5
	be := writeVersions(b, "/registry/events/ns/e-", keys, versions, 300)
	ctx := context.Background()
	key, end := []byte("/registry/events/"), []byte("/registry/events0")
	for _, bc := range []struct {
		name string
		rev  int64
	}{
		{"kept", 0},
		// A count at the revision before the current one walks the
		// history, as every count did before.
		{"walk", be.CurrentRevision() - 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := storage.RangeOptions{CountOnly: true, Revision: bc.rev}
			if _, err := be.Range(ctx, key, end, opts); err != nil { // keeps the count (kept)
				b.Fatal(err)
			}
			for b.Loop() {
				res, err := be.Range(ctx, key, end, opts)
				if err != nil || res.Count != keys {
					b.Fatalf("count %d, %v", res.Count, err)
				}
			}
		})
	}
}

// BenchmarkPagedList reads a prefix of 10,000 keys written 4 times each in
// pages at one revision, as the watch cache's consistency check does: each
// page also counts the rest of the range (etcd's Count, which the API
// server turns into remainingItemCount), so smaller pages walk more.
func BenchmarkPagedList(b *testing.B) {
	const keys, versions = 10000, 4
	be := writeVersions(b, "/registry/pods/ns/p-", keys, versions, 1024)
	ctx := context.Background()
	end := []byte("/registry/pods0")
	rev := be.CurrentRevision()
	for _, limit := range []int64{1000, 2500, 10000} {
		b.Run(fmt.Sprintf("page=%d", limit), func(b *testing.B) {
			for b.Loop() {
				key, n := []byte("/registry/pods/"), 0
				for {
					res, err := be.Range(ctx, key, end, storage.RangeOptions{Revision: rev, Limit: limit})
					if err != nil {
						b.Fatal(err)
					}
					n += len(res.KVs)
					if !res.More {
						break
					}
					key = append(slices.Clone(res.KVs[len(res.KVs)-1].Key), 0)
				}
				if n != keys {
					b.Fatalf("listed %d keys, want %d", n, keys)
				}
			}
		})
	}
}

// writeVersions opens a backend without fsync or timed releases (closed
// when b ends) and writes keys prefix+"00000"... each versions times, with
// values of size bytes, 100 keys a transaction.
func writeVersions(b *testing.B, prefix string, keys, versions, size int) *bolt.Backend {
	b.Helper()
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(b.TempDir(), "state.db"), NoSync: true, ReleaseInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	value := make([]byte, size)
	for v := range versions {
		for i := 0; i < keys; i += 100 {
			var ops []storage.Op
			for j := i; j < min(i+100, keys); j++ {
				ops = append(ops, storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "%s%05d", prefix, j), Value: value})
			}
			if _, err := be.Txn(context.Background(), nil, ops, nil); err != nil {
				b.Fatal(v, err)
			}
		}
	}
	return be
}
