package storefactory_test

import (
	"reflect"
	"strconv"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory/storetest"
	skiffstorage "github.com/skiff-sh/skiff/server/storage"
)

var codecs = serializer.NewCodecFactory(storetest.Scheme())

func getter(d generic.StorageDecorator) *storetest.Getter {
	return &storetest.Getter{Decorator: d, Codecs: codecs}
}

func TestGetterBuildsStoresOnTheSharedClient(t *testing.T) {
	for _, tc := range []struct {
		name      string
		decorator generic.StorageDecorator
		cached    bool
	}{
		{"undecorated", generic.UndecoratedStorage, false},
		{"watch cache", genericregistry.StorageWithCacher(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, f, be := storetest.NewFactory(t, nil)

			inner := getter(tc.decorator)
			opts, err := f.Getter(inner).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if inner.Calls != 1 {
				t.Fatalf("inner getter called %d times, want 1", inner.Calls)
			}
			if opts.ResourcePrefix != "/pods" {
				t.Fatalf("ResourcePrefix %q: the wrapper must keep the inner options", opts.ResourcePrefix)
			}
			st := storetest.PodStore(ctx, t, opts)
			if _, cached := st.(*cacherstorage.CacheDelegator); cached != tc.cached {
				t.Fatalf("store %T: watch cache %v, want %v", st, cached, tc.cached)
			}

			w, err := st.Watch(ctx, "/pods/ns", storage.ListOptions{ResourceVersion: "0", Predicate: storage.Everything, Recursive: true})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			out := &example.Pod{}
			in := &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}
			if err := st.Create(ctx, "/pods/ns/a", in, out, 0); err != nil {
				t.Fatal(err)
			}
			// The object is in the backend the shared client serves.
			res, err := be.Range(ctx, []byte("/registry/pods/ns/a"), nil, skiffstorage.RangeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.KVs) != 1 || strconv.FormatInt(res.KVs[0].ModRevision, 10) != out.ResourceVersion {
				t.Fatalf("backend holds %+v, want the created pod at revision %s", res.KVs, out.ResourceVersion)
			}
			select {
			case ev := <-w.ResultChan():
				// The watch cache hands out its caching wrapper.
				m, err := meta.Accessor(ev.Object)
				if err != nil || ev.Type != watch.Added || m.GetName() != "a" {
					t.Fatalf("watch event %v %v, want ADDED a", ev.Type, ev.Object)
				}
			case <-ctx.Done():
				t.Fatal("no watch event for the created pod")
			}
		})
	}
}

func TestGetterLeavesOtherDecoratorsAlone(t *testing.T) {
	_, f, _ := storetest.NewFactory(t, nil)
	called := false
	custom := func(*storagebackend.ConfigForResource, string, func(runtime.Object) (string, error), func() runtime.Object,
		func() runtime.Object, storage.AttrFunc, storage.IndexerFuncs, *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		called = true
		return nil, func() {}, nil
	}
	opts, err := f.Getter(getter(custom)).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := opts.Decorator(opts.StorageConfig, opts.ResourcePrefix, nil, nil, nil, nil, nil, nil); err != nil || !called {
		t.Fatalf("a decorator the factory does not know was replaced (called %v, err %v)", called, err)
	}
}

// TestWatchCacheInternsObjects: with a table, the objects the watch cache
// keeps share the values they repeat; without one, each keeps its own.
func TestWatchCacheInternsObjects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		table  *intern.Table
		shared bool
	}{
		{"no table", nil, false},
		{"table", intern.New(0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, f, _ := storetest.NewFactory(t, tc.table)
			opts, err := f.Getter(getter(genericregistry.StorageWithCacher())).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := storetest.PodStore(ctx, t, opts)
			for _, name := range []string{"a", "b"} {
				in := &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
					Labels: map[string]string{"app": "web", "tier": "front"}}, Spec: example.PodSpec{NodeName: "node-1"}}
				if err := st.Create(ctx, "/pods/ns/"+name, in, &example.Pod{}, 0); err != nil {
					t.Fatal(err)
				}
			}
			// Listed from the watch cache once it holds both.
			var list example.PodList
			for len(list.Items) < 2 {
				if ctx.Err() != nil {
					t.Fatalf("the watch cache lists %d pods, want 2", len(list.Items))
				}
				if err := st.GetList(ctx, "/pods/ns", storage.ListOptions{ResourceVersion: "0", Predicate: storage.Everything, Recursive: true}, &list); err != nil {
					t.Fatal(err)
				}
			}
			a, b := list.Items[0], list.Items[1]
			if a.Name == b.Name || !reflect.DeepEqual(a.Labels, b.Labels) || a.Spec.NodeName != "node-1" {
				t.Fatalf("listed %+v and %+v", a, b)
			}
			labels := reflect.ValueOf(a.Labels).Pointer() == reflect.ValueOf(b.Labels).Pointer()
			node := unsafe.StringData(a.Spec.NodeName) == unsafe.StringData(b.Spec.NodeName)
			if labels != tc.shared || node != tc.shared {
				t.Fatalf("labels shared %v, node name shared %v; want %v", labels, node, tc.shared)
			}
		})
	}
}
