package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/skiff-sh/skiff/server/storage"
	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		// A small watch window makes watchers resume from the on-disk log.
		be, err := bolt.Open(bolt.Config{Path: filepath.Join(dir, "state.db"), WatchWindow: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Close() })
		return be
	})
}

// TestConformanceSmallCompactBatches runs the suite with compactions
// deleting history two revisions per transaction, so that every
// compaction the suite makes spans many batches.
func TestConformanceSmallCompactBatches(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		be, err := bolt.Open(bolt.Config{Path: filepath.Join(dir, "state.db"), WatchWindow: 8, CompactBatch: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Close() })
		return be
	})
}
