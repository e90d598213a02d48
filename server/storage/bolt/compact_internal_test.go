package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/server/storage"
)

func histAndLogKeys(t *testing.T, b *Backend) (hist, log int) {
	t.Helper()
	err := b.db.View(func(tx *bolt.Tx) error {
		hist = tx.Bucket(bucketHist).Stats().KeyN
		log = tx.Bucket(bucketLog).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hist, log
}

func putN(t *testing.T, b *Backend, keys, versions int) int64 {
	t.Helper()
	var rev int64
	for v := range versions {
		for k := range keys {
			op := storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "/k/%03d", k), Value: fmt.Appendf(nil, "v%d", v)}
			res, err := b.Txn(context.Background(), nil, []storage.Op{op}, nil)
			if err != nil {
				t.Fatal(err)
			}
			rev = res.Revision
		}
	}
	return rev
}

// TestCompactInBatches: a compaction spanning many batches deletes every
// superseded version and log entry, as one transaction did, and leaves the
// latest versions readable.
func TestCompactInBatches(t *testing.T) {
	// A release at every fault window the compaction reaches.
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, CompactBatch: 7, ReleaseInterval: -1, ScanRelease: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const keys, versions = 20, 10
	last := putN(t, b, keys, versions)
	if h, l := histAndLogKeys(t, b); h != keys*versions || l != keys*versions {
		t.Fatalf("before compaction: %d versions, %d log entries; want %d each", h, l, keys*versions)
	}
	commits, releases := b.commits.Load(), b.releases.Load()
	if err := b.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	// One version per key, and the log entry at the compacted revision.
	if h, l := histAndLogKeys(t, b); h != keys || l != 1 {
		t.Errorf("after compaction: %d versions, %d log entries; want %d and 1", h, l, keys)
	}
	// 200 revisions in batches of 7, plus the compaction's own write.
	if n := b.commits.Load() - commits; n < 200/7 {
		t.Errorf("compaction took %d commits, want at least %d batches", n, 200/7)
	}
	// The mapping is released as the batches reach the file's pages, and
	// at the end.
	if n := b.releases.Load() - releases; n < 2 {
		t.Errorf("compaction released the mapping %d times, want more than the last one", n)
	}
	res, err := b.Range(context.Background(), []byte("/k/"), []byte("/k0"), storage.RangeOptions{Revision: last})
	if err != nil || len(res.KVs) != keys {
		t.Fatalf("read at the compacted revision: %d keys, %v", len(res.KVs), err)
	}
	for _, kv := range res.KVs {
		if string(kv.Value) != fmt.Sprint("v", versions-1) {
			t.Errorf("%s = %q after compaction", kv.Key, kv.Value)
		}
	}
}

// TestCompactResumesAfterReopen: a store closed after a compaction was
// recorded but before its history was deleted deletes it after Open.
func TestCompactResumesAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := Open(Config{Path: path, NoSync: true, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	last := putN(t, b, 10, 5)
	// What Compact's first step writes, without the deletion.
	_, err = b.submit(context.Background(), func(tx *bolt.Tx, _ int64) (bool, []storage.Event, error) {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(metaCompactDone, revBytes(0)); err != nil {
			return false, nil, err
		}
		return false, nil, meta.Put(metaCompact, revBytes(last))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = Open(Config{Path: path, NoSync: true, CompactBatch: 3, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.CompactRevision() != last {
		t.Fatalf("compacted revision %d after reopen, want %d", b.CompactRevision(), last)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, l := histAndLogKeys(t, b)
		if h == 10 && l == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d versions and %d log entries 10 s after reopening, want 10 and 1", h, l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCompactLegacyStore: a store compacted before compactions were
// batched (no progress key) is compacted again from its compacted
// revision.
func TestCompactLegacyStore(t *testing.T) {
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, CompactBatch: 4, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mid := putN(t, b, 5, 4)
	if err := b.Compact(context.Background(), mid); err != nil {
		t.Fatal(err)
	}
	// Drop the progress key, as an older skiff would have left the store.
	err = b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaCompactDone) })
	if err != nil {
		t.Fatal(err)
	}
	last := putN(t, b, 5, 3)
	if err := b.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	if h, l := histAndLogKeys(t, b); h != 5 || l != 1 {
		t.Errorf("after the second compaction: %d versions, %d log entries; want 5 and 1", h, l)
	}
}

// TestCompactBatchBoundaries: whatever the batch size, including one that
// ends exactly at the compacted revision, a compaction leaves one version
// per key and the log entry at the compacted revision.
func TestCompactBatchBoundaries(t *testing.T) {
	const keys, versions = 3, 3
	for limit := 1; limit <= keys*versions+1; limit++ {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, CompactBatch: limit, ReleaseInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			last := putN(t, b, keys, versions)
			if err := b.Compact(context.Background(), last); err != nil {
				t.Fatal(err)
			}
			if h, l := histAndLogKeys(t, b); h != keys || l != 1 {
				t.Errorf("batches of %d: %d versions, %d log entries; want %d and 1", limit, h, l, keys)
			}
		})
	}
}

// TestCompactReturnsOnClose: a compaction cut short by Close returns (a
// job queued after the writer stopped fails instead of waiting for ever):
// nil once the compacted revision is recorded, whose history the next
// Open then deletes, ErrClosed before that.
func TestCompactReturnsOnClose(t *testing.T) {
	for i := range 20 {
		path := filepath.Join(t.TempDir(), "state.db")
		b, err := Open(Config{Path: path, NoSync: true, CompactBatch: 1, ReleaseInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		last := putN(t, b, 10, 30)
		done := make(chan error, 1)
		go func() { done <- b.Compact(context.Background(), last) }()
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		var compactErr error
		select {
		case compactErr = <-done:
			if compactErr != nil && !errors.Is(compactErr, storage.ErrClosed) {
				t.Fatalf("Compact cut short by Close: %v", compactErr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Compact did not return after Close")
		}
		b, err = Open(Config{Path: path, NoSync: true, ReleaseInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		want := 300 // versions
		if b.CompactRevision() == last {
			want = 10
		} else if compactErr == nil {
			t.Fatalf("Compact returned nil, but the compacted revision is %d, not %d", b.CompactRevision(), last)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			h, _ := histAndLogKeys(t, b)
			if h == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d versions after reopening, want %d", h, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Close()
	}
}
