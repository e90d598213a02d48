package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/server/storage"
)

// walkCount counts a range by walking the history, as a miss does.
func walkCount(t *testing.T, b *Backend, key, end string) int64 {
	t.Helper()
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		res, err := rangeTx(tx, []byte(key), []byte(end), storage.RangeOptions{CountOnly: true}, b.CurrentRevision(), 0, nil)
		n = res.Count
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func kept(b *Backend, key, end string) (int64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, c := range b.counts {
		if string(c.key) == key && string(c.end) == end {
			return c.count, true
		}
	}
	return 0, false
}

func openCounting(t *testing.T) *Backend {
	t.Helper()
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestCountTransactionsTouchingAKeyTwice: a transaction whose delete range
// covers a key it also puts, or whose delete ranges overlap, changes a kept
// count by what the key's state was before and is after, not by event.
func TestCountTransactionsTouchingAKeyTwice(t *testing.T) {
	ctx := context.Background()
	b := openCounting(t)
	for i := range 6 {
		putKey(t, b, fmt.Sprintf("/x/%d", i))
	}
	const key, end = "/x/", "/x0"
	if _, err := b.Range(ctx, []byte(key), []byte(end), storage.RangeOptions{CountOnly: true}); err != nil {
		t.Fatal(err)
	}
	if n, ok := kept(b, key, end); !ok || n != 6 {
		t.Fatalf("after the first count: kept %d (%v), want 6", n, ok)
	}
	txns := []struct {
		name string
		ops  []storage.Op
	}{
		{"delete range, then put a key in it", []storage.Op{
			{Type: storage.OpDelete, Key: []byte("/x/0"), End: []byte("/x/3")},
			{Type: storage.OpPut, Key: []byte("/x/1"), Value: []byte("v")},
		}},
		{"put a new key, then a delete range over it", []storage.Op{
			{Type: storage.OpPut, Key: []byte("/x/2b"), Value: []byte("v")},
			{Type: storage.OpDelete, Key: []byte("/x/2"), End: []byte("/x/3")},
		}},
		{"overlapping delete ranges", []storage.Op{
			{Type: storage.OpDelete, Key: []byte("/x/3"), End: []byte("/x/5")},
			{Type: storage.OpDelete, Key: []byte("/x/4"), End: []byte("/x/6")},
		}},
		{"put, then a delete range and a put again", []storage.Op{
			{Type: storage.OpPut, Key: []byte("/x/7"), Value: []byte("v")},
			{Type: storage.OpDelete, Key: []byte("/x/6"), End: []byte("/x/8")},
			{Type: storage.OpPut, Key: []byte("/x/8"), Value: []byte("v")},
		}},
	}
	for _, tc := range txns {
		if _, err := b.Txn(ctx, nil, tc.ops, nil); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		n, ok := kept(b, key, end)
		if want := walkCount(t, b, key, end); !ok || n != want {
			t.Fatalf("%s: kept count %d (kept: %v), the history holds %d", tc.name, n, ok, want)
		}
	}
}

// TestCountRangesBounded: at most maxCountRanges counts are kept; the
// least recently asked for goes first.
func TestCountRangesBounded(t *testing.T) {
	ctx := context.Background()
	b := openCounting(t)
	putKey(t, b, "/r/0/a")
	count := func(i int) {
		t.Helper()
		k := fmt.Sprintf("/r/%d/", i)
		res, err := b.Range(ctx, []byte(k), storage.PrefixEnd([]byte(k)), storage.RangeOptions{CountOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(0); i == 0 {
			want = 1
			if res.Count != want {
				t.Fatalf("count of %s = %d, want %d", k, res.Count, want)
			}
		}
	}
	for i := range maxCountRanges {
		count(i)
	}
	count(0) // most recently used now: range 1 is the oldest
	count(maxCountRanges)
	if len(b.counts) != maxCountRanges {
		t.Fatalf("%d counts kept, want %d", len(b.counts), maxCountRanges)
	}
	if _, ok := kept(b, "/r/1/", "/r/10"); ok {
		t.Fatal("the least recently used count was kept")
	}
	if _, ok := kept(b, "/r/0/", "/r/00"); !ok {
		t.Fatal("a recently used count was dropped")
	}
	// Other ranges are not kept: keys-only, a single key, a revision
	// before the current one, a paging start.
	rev := b.CurrentRevision()
	putKey(t, b, "/r/0/b")
	for _, q := range []struct {
		key, end string
		opts     storage.RangeOptions
	}{
		{"/s/", "/s0", storage.RangeOptions{KeysOnly: true}},
		{"/s/a", "", storage.RangeOptions{CountOnly: true}},
		{"/s/", "/s0", storage.RangeOptions{CountOnly: true, Revision: rev}},
		{"/s/a\x00", "/s0", storage.RangeOptions{CountOnly: true}},
	} {
		if _, err := b.Range(ctx, []byte(q.key), []byte(q.end), q.opts); err != nil {
			t.Fatal(err)
		}
		if _, ok := kept(b, q.key, q.end); ok {
			t.Fatalf("range [%q, %q) %+v was kept", q.key, q.end, q.opts)
		}
	}
}

// TestCountKeptAfterLaterCommits: a count read at a revision that commits
// have passed by the time it is kept catches up from the in-memory window,
// and is not kept when the window no longer reaches back to it.
func TestCountKeptAfterLaterCommits(t *testing.T) {
	const key, end = "/w/", "/w0"
	for _, tc := range []struct {
		name   string
		window int
		writes int
		kept   bool
	}{
		{"window holds the later commits", 64, 10, true},
		{"window moved past them", 4, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, ReleaseInterval: -1, WatchWindow: tc.window})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for i := range 5 {
				putKey(t, b, fmt.Sprintf("/w/%d", i))
			}
			rev := b.CurrentRevision()
			count := walkCount(t, b, key, end)
			for i := range tc.writes {
				putKey(t, b, fmt.Sprintf("/w/new-%d", i)) // creates
				putKey(t, b, "/w/0")                      // and updates
			}
			if _, err := b.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpDelete, Key: []byte("/w/1")}}, nil); err != nil {
				t.Fatal(err)
			}
			b.keepCount([]byte(key), []byte(end), count, rev)
			n, ok := kept(b, key, end)
			if ok != tc.kept {
				t.Fatalf("kept: %v, want %v", ok, tc.kept)
			}
			if want := walkCount(t, b, key, end); ok && n != want {
				t.Fatalf("kept count %d, the history holds %d", n, want)
			}
		})
	}
}
