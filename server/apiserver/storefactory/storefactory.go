// Package storefactory builds the API server's registry stores (built-in
// resources, CustomResourceDefinitions' resources, APIServices) on one
// in-process etcd client, in place of upstream's storage factory, which
// dials a new gRPC connection per resource (~70 in kube-apiserver) through
// a package variable that cannot be swapped. Everything above the client is
// upstream's: the etcd3 store, its decoder and transformer, the watch
// cache. The few raw stores upstream builds outside the registries
// (NodePort/ClusterIP allocation bitmaps, endpoint leases) and the etcd
// health checks are not built here and keep dialing the etcd endpoint.
package storefactory

import (
	"reflect"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdk8s "go.etcd.io/etcd/client/v3/kubernetes"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericfeatures "k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// Factory builds stores on one etcd client.
type Factory struct {
	client    *etcdk8s.Client
	compactor etcd3.Compactor
}

// New wraps an etcd client and starts the one compactor its stores report
// compactions through (upstream: one per endpoint; compactionInterval 0
// only tracks compactions made elsewhere). stop ends the compactor.
func New(c *clientv3.Client, compactionInterval time.Duration) (f *Factory, stop func()) {
	kc := &etcdk8s.Client{Client: c}
	kc.Kubernetes = kc
	// Upstream decorates each store's client the same way (etcd request
	// latency metrics); the tracker keeps no per-store state.
	kc.KV = etcd3.NewETCDLatencyTracker(c.KV)
	comp := etcd3.NewCompactor(c, compactionInterval, clock.RealClock{}, nil)
	return &Factory{client: kc, compactor: comp}, comp.Stop
}

// Getter makes g hand out s's stores; everything else g decides (storage
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

var undecoratedPC = reflect.ValueOf(generic.UndecoratedStorage).Pointer()

func (g restOptionsGetter) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := g.RESTOptionsGetter.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	// Upstream hands out generic.UndecoratedStorage (no watch cache) or
	// genericregistry.StorageWithCacher(); keep that choice.
	if reflect.ValueOf(opts.Decorator).Pointer() == undecoratedPC {
		opts.Decorator = g.f.undecorated
	} else {
		opts.Decorator = g.f.withCacher
	}
	return opts, nil
}

// raw is factory.Create's etcd3 store (newETCD3Storage upstream) on the
// shared client.
func (f *Factory) raw(c *storagebackend.ConfigForResource, newFunc, newListFunc func() runtime.Object, resourcePrefix string) (storage.Interface, factory.DestroyFunc, error) {
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
	st, err := etcd3.New(f.client, f.compactor, c.Codec, newFunc, newListFunc, c.Prefix, resourcePrefix,
		c.GroupResource, transformer, c.LeaseManagerConfig, decoder, versioner)
	if err != nil {
		return nil, nil, err
	}
	var ret storage.Interface = st
	if unsafeDelete {
		ret = etcd3.NewStoreWithUnsafeCorruptObjectDeletion(ret, c.GroupResource)
	}
	// Destroy funcs are called more than once (subresources share stores).
	return ret, sync.OnceFunc(st.Close), nil
}

func (f *Factory) undecorated(c *storagebackend.ConfigForResource, resourcePrefix string,
	_ func(runtime.Object) (string, error), newFunc, newListFunc func() runtime.Object,
	_ storage.AttrFunc, _ storage.IndexerFuncs, _ *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	return f.raw(c, newFunc, newListFunc, resourcePrefix)
}

// withCacher is genericregistry.StorageWithCacher over raw.
func (f *Factory) withCacher(c *storagebackend.ConfigForResource, resourcePrefix string,
	keyFunc func(runtime.Object) (string, error), newFunc, newListFunc func() runtime.Object,
	getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	st, destroy, err := f.raw(c, newFunc, newListFunc, resourcePrefix)
	if err != nil {
		return nil, nil, err
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
	return delegator, sync.OnceFunc(func() {
		delegator.Stop()
		cacher.Stop()
		destroy()
	}), nil
}
