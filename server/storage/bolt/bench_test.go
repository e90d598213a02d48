package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

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
