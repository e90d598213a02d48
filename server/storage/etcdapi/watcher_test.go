package etcdapi_test

import (
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The direct watcher answers as a gRPC-served watch does, for the options
// the upstream storage does not use too. Each case runs on both clients,
// so the served watch is the reference.
func TestWatcherOptions(t *testing.T) {
	tests := []struct {
		name string
		// Before the watch: keys put, then deleted; compact to the revision
		// after the setup when compact is set.
		compact bool
		opts    []clientv3.OpOption
		// What the watch delivers, in order: "CREATED", "PUT k",
		// "DELETE k", "COMPACTED" (a final Canceled response with the
		// compact revision). Events may share a response or not.
		want []string
	}{
		{name: "created notify", opts: []clientv3.OpOption{clientv3.WithCreatedNotify()},
			want: []string{"CREATED", "PUT /k/a", "DELETE /k/a"}},
		{name: "no put", opts: []clientv3.OpOption{clientv3.WithFilterPut()}, want: []string{"DELETE /k/a"}},
		{name: "no delete", opts: []clientv3.OpOption{clientv3.WithFilterDelete()}, want: []string{"PUT /k/a"}},
		{name: "from a compacted revision", compact: true, opts: []clientv3.OpOption{clientv3.WithRev(1)},
			want: []string{"COMPACTED"}},
	}
	for _, kind := range []clientKind{served, inProcess} {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				ctx, c := newClient(t, kind, 20*time.Second)
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
				var got []string
				for len(got) < len(tt.want) {
					var r clientv3.WatchResponse
					select {
					case r = <-wch:
					case <-ctx.Done():
						t.Fatalf("got %q, want %q", got, tt.want)
					}
					if r.Created {
						got = append(got, "CREATED")
					}
					for _, ev := range r.Events {
						got = append(got, ev.Type.String()+" "+string(ev.Kv.Key))
					}
					if r.Canceled {
						if r.CompactRevision == 0 || r.Err() != rpctypes.ErrCompacted {
							t.Fatalf("canceled: %+v, error %v; want a compaction", r, r.Err())
						}
						got = append(got, "COMPACTED")
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("got %q, want %q", got, tt.want)
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
