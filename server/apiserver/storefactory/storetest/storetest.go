// Package storetest builds storefactory stores for tests: a factory over a
// new bolt backend served by the in-process etcd API, and stores of the
// API server library's example pods (k8s.io/apiserver/pkg/apis/example,
// internal and v1) on it, with or without a watch cache.
package storetest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory"
	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// Scheme holds the example group's internal and v1 types and conversions.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(s))
	utilruntime.Must(examplev1.AddToScheme(s))
	// The group registers no pod list type; stores list into it.
	s.AddKnownTypes(example.SchemeGroupVersion, &example.PodList{})
	s.AddKnownTypes(examplev1.SchemeGroupVersion, &examplev1.PodList{})
	return s
}

// Getter stands in for upstream's RESTOptionsGetter: it gives every
// resource Decorator (watch cache or not), storing v1 objects under
// /registry.
type Getter struct {
	Decorator generic.StorageDecorator
	Codecs    serializer.CodecFactory
	Calls     int
}

// GetRESTOptions implements generic.RESTOptionsGetter.
func (g *Getter) GetRESTOptions(gr schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	g.Calls++
	cfg := storagebackend.NewDefaultConfig("/registry", g.Codecs.LegacyCodec(examplev1.SchemeGroupVersion))
	// Nothing listens here: a store that dialed it would fail.
	cfg.Transport.ServerList = []string{"unix:///nonexistent/etcd.sock"}
	return generic.RESTOptions{
		StorageConfig:  cfg.ForResource(gr),
		Decorator:      g.Decorator,
		ResourcePrefix: "/" + gr.Resource,
	}, nil
}

// NewFactory returns a factory over a new bolt backend, and a context that
// ends with the test (30 s at most).
func NewFactory(t testing.TB, objects *intern.Table) (context.Context, *storefactory.Factory, *bolt.Backend) {
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
	// The watch cache serves watch-list and consistent reads only once
	// the process has seen an etcd that supports progress requests: the
	// factory has the in-process server checked (process-wide).
	for !etcdfeature.DefaultFeatureSupportChecker.Supports(storage.RequestWatchProgress) {
		if ctx.Err() != nil {
			t.Fatal("the in-process etcd API does not support progress requests")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ctx, f, be
}

// PodStore makes opts' store of example pods, destroyed (twice, as
// upstream does) when the test ends, and waits until it serves (a cacher
// does once it has listed).
func PodStore(ctx context.Context, t testing.TB, opts generic.RESTOptions) storage.Interface {
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
