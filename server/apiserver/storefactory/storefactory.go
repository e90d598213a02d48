// Package storefactory builds the API server's registry stores (built-in
// resources, CustomResourceDefinitions' resources, APIServices) on
// in-process etcd clients, in place of upstream's storage factory, which
// dials a new gRPC connection per resource (~70 in kube-apiserver) through
// a package variable that cannot be swapped. Everything above the client is
// upstream's: the etcd3 store, its decoder and transformer, the watch
// cache. The few raw stores upstream builds outside the registries
// (NodePort/ClusterIP allocation bitmaps, endpoint leases) and the etcd
// health checks are not built here: upstream's factory builds them, on
// in-process clients too (storagebackend.TransportConfig.NewClient, a
// Skiff patch to k8s.io/apiserver).
package storefactory

import (
	"context"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdk8s "go.etcd.io/etcd/client/v3/kubernetes"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericfeatures "k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/skiff-sh/skiff/internal/intern"
)

// Factory builds stores on in-process etcd clients.
type Factory struct {
	newClient func() *clientv3.Client
	compactor etcd3.Compactor
	objects   *intern.Table

	cached sync.Map // schema.GroupResource -> *cachedStore
}

// cachedStore is a resource's store with a watch cache, as its registry
// uses it.
type cachedStore struct {
	st      storage.Interface
	key     string // the registry's key root: every object of the resource
	newList func() kruntime.Object
}

// Cached returns gr's store with a watch cache, as its registry uses it
// (reads of the watch cache, writes through to storage), with the key of
// all its objects and its internal list type; ok is false while gr has
// none (not built yet, built without a watch cache, or destroyed). For
// in-process readers of the watch cache (server/apiserver/cachelw).
func (f *Factory) Cached(gr schema.GroupResource) (st storage.Interface, key string, newList func() kruntime.Object, ok bool) {
	v, ok := f.cached.Load(gr)
	if !ok {
		return nil, "", nil, false
	}
	c := v.(*cachedStore)
	return c.st, c.key, c.newList, true
}

// New starts the one compactor the stores report compactions through
// (upstream: one per endpoint; compactionInterval 0 only tracks
// compactions made elsewhere); stop ends it. newClient returns a new
// in-process client: each store gets its own, so that each resource's
// watch has its own stream as with upstream's connection per resource
// (clientv3 multiplexes every watch of a client on one stream, where one
// resource's progress requests would reach every resource's watch).
// In-process clients cost no connection and marshal nothing.
//
// objects, if not nil, interns every object as it enters a watch cache
// (internal/intern): the watch cache keeps an object for as long as it is
// current and hands it out read-only, so its objects share the strings
// and small maps they repeat.
func New(newClient func() *clientv3.Client, compactionInterval time.Duration, objects *intern.Table) (f *Factory, stop func()) {
	c := newClient()
	comp := etcd3.NewCompactor(c, compactionInterval, clock.RealClock{}, nil)
	// The watch cache serves watch-lists and consistent reads only once
	// the process has seen an etcd that supports progress requests
	// (process-wide). Upstream's factory checks each client it dials, by
	// its endpoints; an in-process client has none, so the in-process
	// server is checked here, once, as one endpoint.
	etcdfeature.DefaultFeatureSupportChecker.CheckClient(c.Ctx(), inProcess{c}, storage.RequestWatchProgress)
	return &Factory{newClient: newClient, compactor: comp, objects: objects}, comp.Stop
}

// inProcess is an in-process client as the feature checker sees clients:
// one endpoint.
type inProcess struct{ c *clientv3.Client }

func (inProcess) Endpoints() []string { return []string{"in-process"} }

func (p inProcess) Status(ctx context.Context, _ string) (*clientv3.StatusResponse, error) {
	return p.c.Status(ctx, "")
}

// Getter makes g hand out f's stores; everything else g decides (storage
// version, codec, prefix, watch cache on or off) stays as it was. A nil g
// stays nil.
func (f *Factory) Getter(g generic.RESTOptionsGetter) generic.RESTOptionsGetter {
	if g == nil {
		return nil
	}
	return restOptionsGetter{RESTOptionsGetter: g, f: f}
}

type restOptionsGetter struct {
	generic.RESTOptionsGetter
	f *Factory
}

// undecoratedPC identifies generic.UndecoratedStorage, a top-level func.
var undecoratedPC = reflect.ValueOf(generic.UndecoratedStorage).Pointer()

// isStorageWithCacher: pc is the code of a closure made by
// genericregistry.StorageWithCacher. Closures have no identity to compare
// and their code pointer differs wherever the maker is inlined, but the
// compiler names them after it: "...StorageWithCacher.func1", or
// "<caller>.StorageWithCacher.1" where the maker is inlined into a closure.
func isStorageWithCacher(pc uintptr) bool {
	fn := runtime.FuncForPC(pc)
	return fn != nil && strings.Contains(fn.Name(), ".StorageWithCacher.")
}

func (g restOptionsGetter) GetRESTOptions(resource schema.GroupResource, example kruntime.Object) (generic.RESTOptions, error) {
	opts, err := g.RESTOptionsGetter.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	// Keep the getter's choice of watch cache or none; a decorator other
	// than upstream's two is left alone (its stores dial the endpoint).
	switch pc := reflect.ValueOf(opts.Decorator).Pointer(); {
	case pc == undecoratedPC:
		opts.Decorator = g.f.undecorated
	case isStorageWithCacher(pc):
		opts.Decorator = g.f.withCacher
	default:
		klog.InfoS("storefactory: unknown storage decorator, the resource's store dials the etcd endpoint", "resource", resource)
	}
	return opts, nil
}

// raw is factory.Create's etcd3 store (newETCD3Storage upstream) on the
// store's own in-process client.
func (f *Factory) raw(c *storagebackend.ConfigForResource, newFunc, newListFunc func() kruntime.Object, resourcePrefix string) (storage.Interface, factory.DestroyFunc, error) {
	transformer := c.Transformer
	if transformer == nil {
		transformer = identity.NewEncryptCheckTransformer()
	}
	versioner := storage.APIObjectVersioner{}
	decoder := etcd3.NewDefaultDecoder(c.Codec, versioner)
	unsafeDelete := utilfeature.DefaultFeatureGate.Enabled(genericfeatures.AllowUnsafeMalformedObjectDeletion)
	if unsafeDelete {
		transformer = etcd3.WithCorruptObjErrorHandlingTransformer(transformer)
		decoder = etcd3.WithCorruptObjErrorHandlingDecoder(decoder)
	}
	client := f.newClient()
	// As upstream: the store's KV reports etcd request latency.
	client.KV = etcd3.NewETCDLatencyTracker(client.KV)
	kc := &etcdk8s.Client{Client: client}
	kc.Kubernetes = kc
	st, err := etcd3.New(kc, f.compactor, c.Codec, newFunc, newListFunc, c.Prefix, resourcePrefix,
		c.GroupResource, transformer, c.LeaseManagerConfig, decoder, versioner)
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	var ret storage.Interface = st
	if unsafeDelete {
		ret = etcd3.NewStoreWithUnsafeCorruptObjectDeletion(ret, c.GroupResource)
	}
	// Destroy funcs are called more than once (subresources share stores).
	return ret, sync.OnceFunc(func() {
		st.Close()
		_ = client.Close()
	}), nil
}

func (f *Factory) undecorated(c *storagebackend.ConfigForResource, resourcePrefix string,
	_ func(kruntime.Object) (string, error), newFunc, newListFunc func() kruntime.Object,
	_ storage.AttrFunc, _ storage.IndexerFuncs, _ *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	return f.raw(c, newFunc, newListFunc, resourcePrefix)
}

// withCacher is genericregistry.StorageWithCacher over raw.
func (f *Factory) withCacher(c *storagebackend.ConfigForResource, resourcePrefix string,
	keyFunc func(kruntime.Object) (string, error), newFunc, newListFunc func() kruntime.Object,
	getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	st, destroy, err := f.raw(c, newFunc, newListFunc, resourcePrefix)
	if err != nil {
		return nil, nil, err
	}
	if f.objects != nil && getAttrs != nil {
		// The watch cache computes an object's attributes exactly once,
		// as the object enters it (an event or its initial list), before
		// it stores or dispatches it: the one place to intern.
		attrs := getAttrs
		getAttrs = func(obj kruntime.Object) (labels.Set, fields.Set, error) {
			f.objects.Object(obj)
			return attrs(obj)
		}
	}
	cacher, err := cacherstorage.NewCacherFromConfig(cacherstorage.Config{
		Storage:             st,
		Versioner:           storage.APIObjectVersioner{},
		GroupResource:       c.GroupResource,
		EventsHistoryWindow: c.EventsHistoryWindow,
		ResourcePrefix:      resourcePrefix,
		KeyFunc:             keyFunc,
		NewFunc:             newFunc,
		NewListFunc:         newListFunc,
		GetAttrsFunc:        getAttrs,
		IndexerFuncs:        triggers,
		Indexers:            indexers,
		Codec:               c.Codec,
	})
	if err != nil {
		destroy()
		return nil, func() {}, err
	}
	delegator := cacherstorage.NewCacheDelegator(cacher, st)
	// A resource's registry makes its store once (subresources share it);
	// a CRD's is made again when the CRD changes.
	entry := &cachedStore{st: delegator, key: resourcePrefix, newList: newListFunc}
	f.cached.Store(c.GroupResource, entry)
	return delegator, sync.OnceFunc(func() {
		f.cached.CompareAndDelete(c.GroupResource, entry)
		delegator.Stop()
		cacher.Stop()
		destroy()
	}), nil
}
