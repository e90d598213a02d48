package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
)

func TestCommitPacer(t *testing.T) {
	for _, c := range []struct {
		name    string
		commits []int // transactions per commit, in order
		want    bool  // concurrent after them
	}{
		{"start", nil, false},
		{"lone writer", repeat(1, 1000), false},
		{"one pair", []int{2}, false},
		{"pairs", repeat(2, 3), true},
		{"sixteen writers", repeat(16, 2), true},
		{"a lone writer after pairs", append(repeat(2, 50), repeat(1, 12)...), false},
		{"a lone writer after the largest batches", append(repeat(512, 50), repeat(1, 42)...), false},
		{"a lone writer and the odd pair", append(repeat(1, 20), 2, 1, 1, 2, 1), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := commitPacer{avg: 256}
			for _, n := range c.commits {
				p.committed(n)
			}
			if got := p.concurrent(); got != c.want {
				t.Fatalf("concurrent = %v (avg %d/256), want %v", got, p.avg, c.want)
			}
		})
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func put(t *testing.T, b *Backend, key string) {
	t.Helper()
	if _, err := b.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpPut, Key: []byte(key), Value: []byte("v")}}, nil); err != nil {
		t.Error(err)
	}
}

// TestCommitDelay: while writes are concurrent, a transaction waits for
// the next one to share its commit; a lone writer's transactions commit
// at once.
func TestCommitDelay(t *testing.T) {
	const delay = time.Second
	t.Run("concurrent", func(t *testing.T) {
		b, err := Open(Config{Path: filepath.Join(t.TempDir(), "db"), CommitDelay: delay})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		// Set before the first transaction is sent, which orders it
		// before the writer's read.
		b.pace.avg = 2 * 256
		var wg sync.WaitGroup
		wg.Go(func() { put(t, b, "/a") })
		time.Sleep(delay / 10)
		wg.Go(func() { put(t, b, "/b") })
		wg.Wait()
		if n := b.commits.Load(); n != 1 {
			t.Fatalf("%d commits for two concurrent transactions, want 1", n)
		}
	})
	t.Run("lone writer", func(t *testing.T) {
		b, err := Open(Config{Path: filepath.Join(t.TempDir(), "db"), CommitDelay: delay})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		start := b.commits.Load()
		t0 := time.Now()
		for i := range 3 {
			put(t, b, fmt.Sprintf("/k%d", i))
		}
		if n := b.commits.Load() - start; n != 3 {
			t.Fatalf("%d commits for 3 transactions in turn, want 3", n)
		}
		// Had any waited for company, the three would have taken 3 s.
		if d := time.Since(t0); d >= delay {
			t.Fatalf("3 transactions in turn took %v: the writer waited for more", d)
		}
	})
}
