package etcdapi_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// The direct watcher answers as a gRPC-served watch does, for the options
// the upstream storage does not use too. Each case runs on both clients,
// so the served watch is the reference.
func TestWatcherOptions(t *testing.T) {
	type resp struct {
		created, canceled bool
		compactRev        bool
		events            []string // "PUT k" / "DELETE k"
	}
	tests := []struct {
		name string
		// Before the watch: keys put, then deleted; compact to the revision
		// after the setup when compact is set.
		compact bool
		opts    []clientv3.OpOption
		want    []resp
	}{
		{name: "created notify", opts: []clientv3.OpOption{clientv3.WithCreatedNotify()},
			want: []resp{{created: true}, {events: []string{"PUT /k/a"}}, {events: []string{"DELETE /k/a"}}}},
		{name: "no put", opts: []clientv3.OpOption{clientv3.WithFilterPut()},
			want: []resp{{events: []string{"DELETE /k/a"}}}},
		{name: "no delete", opts: []clientv3.OpOption{clientv3.WithFilterDelete()},
			want: []resp{{events: []string{"PUT /k/a"}}}},
		{name: "from a compacted revision", compact: true, opts: []clientv3.OpOption{clientv3.WithRev(1)},
			want: []resp{{canceled: true, compactRev: true}}},
	}
	for _, kind := range []clientKind{served, inProcess} {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				be, err := bolt.Open(bolt.Config{Path: filepath.Join(t.TempDir(), "db"), NoSync: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { be.Close() })
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				c := kind.new(ctx, etcdapi.New(be))
				defer c.Close()
				if tt.compact {
					for range 3 {
						if _, err := c.Put(ctx, "/x", "v"); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := c.Compact(ctx, 3); err != nil {
						t.Fatal(err)
					}
				}
				wch := c.Watch(ctx, "/k/", append([]clientv3.OpOption{clientv3.WithPrefix()}, tt.opts...)...)
				if !tt.compact {
					if _, err := c.Put(ctx, "/k/a", "v"); err != nil {
						t.Fatal(err)
					}
					if _, err := c.Delete(ctx, "/k/a"); err != nil {
						t.Fatal(err)
					}
				}
				for i, want := range tt.want {
					var r clientv3.WatchResponse
					select {
					case r = <-wch:
					case <-ctx.Done():
						t.Fatalf("response %d: none", i)
					}
					got := resp{created: r.Created, canceled: r.Canceled, compactRev: r.CompactRevision > 0}
					for _, ev := range r.Events {
						got.events = append(got.events, ev.Type.String()+" "+string(ev.Kv.Key))
					}
					if got.created != want.created || got.canceled != want.canceled || got.compactRev != want.compactRev || len(got.events) != len(want.events) {
						t.Fatalf("response %d: %+v, want %+v", i, got, want)
					}
					for j := range want.events {
						if got.events[j] != want.events[j] {
							t.Fatalf("response %d: %+v, want %+v", i, got, want)
						}
					}
					if want.compactRev && r.Err() != rpctypes.ErrCompacted {
						t.Fatalf("response %d: error %v, want %v", i, r.Err(), rpctypes.ErrCompacted)
					}
				}
				if tt.compact {
					// The channel closes after the final response.
					select {
					case r, ok := <-wch:
						if ok {
							t.Fatalf("after the compaction response: %+v, want the channel closed", r)
						}
					case <-ctx.Done():
						t.Fatal("the channel stays open after the compaction response")
					}
				}
				// Closing the client ends the watch.
				_ = c.Close()
				deadline := time.After(5 * time.Second)
				for {
					select {
					case _, ok := <-wch:
						if !ok {
							return
						}
					case <-deadline:
						t.Fatal("the watch channel stays open after the client closed")
					}
				}
			})
		}
	}
}
