package storefactory_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unsafe"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory"
	skiffstorage "github.com/skiff-sh/skiff/server/storage"
	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
}

// getter stands in for upstream's RESTOptionsGetter: it picks the
// decorator (watch cache or not) the wrapper must keep.
type getter struct {
	decorator generic.StorageDecorator
	calls     int
}

func (g *getter) GetRESTOptions(gr schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	g.calls++
	cfg := storagebackend.NewDefaultConfig("/registry", codecs.LegacyCodec(examplev1.SchemeGroupVersion))
	// Nothing listens here: a store that dialed it would fail.
	cfg.Transport.ServerList = []string{"unix:///nonexistent/etcd.sock"}
	return generic.RESTOptions{
		StorageConfig:  cfg.ForResource(gr),
		Decorator:      g.decorator,
		ResourcePrefix: "/" + gr.Resource,
	}, nil
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
			ctx, f, be := newFactory(t, nil)

			inner := &getter{decorator: tc.decorator}
			opts, err := f.Getter(inner).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if inner.calls != 1 {
				t.Fatalf("inner getter called %d times, want 1", inner.calls)
			}
			if opts.ResourcePrefix != "/pods" {
				t.Fatalf("ResourcePrefix %q: the wrapper must keep the inner options", opts.ResourcePrefix)
			}
			st := podStore(ctx, t, opts)
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

// newFactory returns a factory over a new bolt backend, and a context that
// ends with the test (30 s at most).
func newFactory(t *testing.T, objects *intern.Table) (context.Context, *storefactory.Factory, *bolt.Backend) {
	t.Helper()
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(t.TempDir(), "db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	srv := etcdapi.New(be)
	f, stop := storefactory.New(func() *clientv3.Client { return srv.Client(ctx) }, 0, objects)
	t.Cleanup(stop)
	return ctx, f, be
}

// podStore makes opts' store of example pods, destroyed (twice, as upstream
// does) when the test ends, and waits until it serves (a cacher does once
// it has listed).
func podStore(ctx context.Context, t *testing.T, opts generic.RESTOptions) storage.Interface {
	t.Helper()
	st, destroy, err := opts.Decorator(opts.StorageConfig, opts.ResourcePrefix,
		func(obj runtime.Object) (string, error) {
			return storage.NamespaceKeyFunc(opts.ResourcePrefix+"/", obj)
		},
		func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} },
		storage.DefaultNamespaceScopedAttr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	t.Cleanup(destroy)
	for st.ReadinessCheck() != nil {
		if ctx.Err() != nil {
			t.Fatal("store never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return st
}

func TestGetterLeavesOtherDecoratorsAlone(t *testing.T) {
	be, err := bolt.Open(bolt.Config{Path: filepath.Join(t.TempDir(), "db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	srv := etcdapi.New(be)
	f, stop := storefactory.New(func() *clientv3.Client { return srv.Client(t.Context()) }, 0, nil)
	t.Cleanup(stop)
	called := false
	custom := func(*storagebackend.ConfigForResource, string, func(runtime.Object) (string, error), func() runtime.Object,
		func() runtime.Object, storage.AttrFunc, storage.IndexerFuncs, *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		called = true
		return nil, func() {}, nil
	}
	opts, err := f.Getter(&getter{decorator: custom}).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
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
			ctx, f, _ := newFactory(t, tc.table)
			opts, err := f.Getter(&getter{decorator: genericregistry.StorageWithCacher()}).GetRESTOptions(schema.GroupResource{Resource: "pods"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := podStore(ctx, t, opts)
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
