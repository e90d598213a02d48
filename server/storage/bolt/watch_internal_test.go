package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
)

func putKey(t *testing.T, b *Backend, key string) int64 {
	t.Helper()
	res, err := b.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpPut, Key: []byte(key), Value: []byte("v")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// waitParked waits until the watcher waits parked at a revision > after.
func waitParked(t *testing.T, w *watcher, after int64) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p := w.parked.Load(); p > after {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher never parked past revision %d (parked %d)", after, w.parked.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWatchParksPastOtherKeys: commits without an event for a watcher do
// not wake it but move it on, so when its own key changes, after more
// commits than the in-memory window holds, it resumes at the commit's
// revision instead of rebuilding the skipped ones from disk.
func TestWatchParksPastOtherKeys(t *testing.T) {
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, WatchWindow: 8, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sw, err := b.Watch(context.Background(), []byte("/a/"), []byte("/a0"), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	w := sw.(*watcher)
	waitParked(t, w, 0)
	wakes := len(w.wake)
	var last int64
	for i := range 50 {
		last = putKey(t, b, fmt.Sprintf("/b/%d", i))
	}
	if got := w.parked.Load(); got != last+1 {
		t.Fatalf("after 50 commits on other keys the watcher is parked at %d, want %d", got, last+1)
	}
	if len(w.wake) != wakes {
		t.Fatal("commits on other keys woke the watcher")
	}
	rev := putKey(t, b, "/a/x")
	select {
	case batch := <-sw.Events():
		if len(batch.Events) != 1 || string(batch.Events[0].KV.Key) != "/a/x" || batch.Events[0].KV.ModRevision != rev {
			t.Fatalf("got %+v, want the put of /a/x at %d", batch, rev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for /a/x")
	}
	waitParked(t, w, rev)
}

// TestPublishKeepsAWokenWatchersRevision: a commit with no event for a
// watcher that a previous commit has woken, but that has not run yet,
// must not move it past the event it was woken for.
func TestPublishKeepsAWokenWatchersRevision(t *testing.T) {
	b := &Backend{watchers: map[*watcher]struct{}{}}
	w := &watcher{key: []byte("/a/"), end: []byte("/a0"), wake: make(chan struct{}, 1)}
	b.watchers[w] = struct{}{}
	w.parked.Store(10)
	put := func(rev int64, key string) *job {
		return &job{rev: rev, wrote: true, events: []storage.Event{{Type: storage.EventPut, KV: storage.KeyValue{Key: []byte(key), ModRevision: rev}}}}
	}
	b.publish([]*job{put(10, "/b/1")}, 10)
	if got := w.parked.Load(); got != 11 || len(w.wake) != 0 {
		t.Fatalf("after a commit on another key: parked %d, %d wake-ups; want 11 and none", got, len(w.wake))
	}
	b.publish([]*job{put(11, "/a/1")}, 11)
	if len(w.wake) != 1 {
		t.Fatal("a commit on the watcher's key did not wake it")
	}
	b.publish([]*job{put(12, "/b/2")}, 12)
	if got := w.unpark(11); got != 11 {
		t.Fatalf("the woken watcher resumes at %d, want 11 (the revision of its event)", got)
	}
	if w.parked.Load() != 0 {
		t.Fatal("unpark left the watcher parked")
	}

	// A watch from a future revision is not moved back.
	w.parked.Store(100)
	b.publish([]*job{put(13, "/b/3")}, 13)
	if got := w.parked.Load(); got != 100 {
		t.Fatalf("a watcher parked at 100 was moved to %d by the commit of 13", got)
	}
}
