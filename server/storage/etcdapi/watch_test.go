package etcdapi_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// Many watches share one stream of a client. While events pour in, the
// client keeps creating and cancelling watches on that stream and asking
// for progress. A server that waited for room in the event queue before
// acknowledging a request deadlocked here: the client was blocked sending
// the request while the responses it had not read yet filled the queue.
// The in-process client's direct watcher gets the same load: slow readers
// hold back their own watches only, and every event arrives.
func TestWatchStreamRequestsNeverWaitForEvents(t *testing.T) {
	for _, kind := range []clientKind{served, inProcess} {
		t.Run(kind.name, func(t *testing.T) { testWatchesUnderChurn(t, kind) })
	}
}

// newClient returns a client of kind on a fresh backend, closed when the
// test ends, and a context that ends after timeout.
func newClient(t *testing.T, kind clientKind, timeout time.Duration) (context.Context, *clientv3.Client) {
	t.Helper()
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(t.TempDir(), "db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	c := kind.new(ctx, etcdapi.New(be))
	t.Cleanup(func() { _ = c.Close() })
	return ctx, c
}

func testWatchesUnderChurn(t *testing.T, kind clientKind) {
	ctx, c := newClient(t, kind, 60*time.Second)
	ctx, cancel := context.WithCancel(ctx) // ends the churn
	defer cancel()
	wctx := clientv3.WithRequireLeader(ctx) // one stream, as the API server's stores

	const watchers, writes = 32, 2000
	var wg sync.WaitGroup
	for i := range watchers {
		wch := c.Watch(wctx, "/k/", clientv3.WithPrefix())
		wg.Add(1)
		go func() { // a slow reader, like a busy watch cache
			defer wg.Done()
			seen := 0
			for seen < writes {
				select {
				case r, ok := <-wch:
					if !ok {
						t.Errorf("watch %d closed after %d events: %v", i, seen, ctx.Err())
						return
					}
					seen += len(r.Events)
					if i%4 == 0 {
						time.Sleep(time.Millisecond)
					}
				case <-ctx.Done():
					t.Errorf("watch %d saw %d of %d events", i, seen, writes)
					return
				}
			}
		}()
	}
	churnDone := make(chan struct{})
	go func() { // watches come and go on the same stream meanwhile
		defer close(churnDone)
		for ctx.Err() == nil {
			cctx, ccancel := context.WithCancel(wctx)
			wch := c.Watch(cctx, "/other/")
			_ = c.RequestProgress(wctx) // as consistent reads from the watch cache do
			ccancel()
			for range wch {
			}
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
			}
		}
	}()
	for i := range writes {
		if _, err := c.Put(ctx, fmt.Sprintf("/k/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	cancel()
	<-churnDone
}
