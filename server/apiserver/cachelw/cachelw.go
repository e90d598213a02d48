// Package cachelw lists and watches a resource of the API server's watch
// cache in-process, for the API server's own shared informers (which the
// controller manager and the scheduler share too, see server/informerpool).
//
// Upstream's informers reach the watch cache through a loopback HTTP
// request: the cached object is converted to its version, encoded to
// protobuf, sent over TLS and decoded into a new object that the informer
// keeps. A ListerWatcher of this package asks the same store the
// resource's registry reads (the cacher, through upstream's delegator,
// with upstream's list and watch semantics: resource versions, watch-list
// initial events and bookmarks, consistent reads, "too old" errors) and
// converts its internal objects to the version with the scheme's unsafe
// conversion, as the HTTP handlers do before encoding. For pods the
// conversion shares everything below the top-level struct (identical
// layouts are cast), so the informer's pod costs a struct, not a copy.
//
// Objects shared with the watch cache are read-only, which is already the
// contract of informer caches (upstream runs its controllers with the
// cache mutation detector to hold them to it) and of the watch cache
// (the HTTP watch's encoders read the same objects concurrently). Objects
// that are the informer's own (the deep copies the cacher makes for
// initial events) go to Config.Own.
//
// Only reads are served this way; every write of a controller goes
// through the API. Options that select (label or field selectors) and
// resources without a watch cache are served by the client's ListWatch.
package cachelw

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	storeerr "k8s.io/apiserver/pkg/storage/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// requests counts the lists and watches the ListerWatchers served, by
// resource, verb and where from ("cache": in-process; "client": over the
// API), so an operator, and the end-to-end tests, can see which path the
// informers take.
var requests = metrics.NewCounterVec(&metrics.CounterOpts{
	Namespace:      "skiff",
	Subsystem:      "cachelw",
	Name:           "requests_total",
	Help:           "Lists and watches of the API server's in-process informers, by resource, verb and where they were served from (cache or client).",
	StabilityLevel: metrics.ALPHA,
}, []string{"resource", "verb", "from"})

var registerOnce sync.Once

// RegisterMetrics registers the package's metrics with the API server's
// registry (legacyregistry, served at /metrics); later calls do nothing.
func RegisterMetrics() {
	registerOnce.Do(func() { legacyregistry.MustRegister(requests) })
}

// Stores finds a resource's store with a watch cache (storefactory.Factory).
type Stores interface {
	// Cached returns gr's store, the key of all its objects and its
	// internal list type; ok is false if gr has none now.
	Cached(gr schema.GroupResource) (st storage.Interface, key string, newList func() runtime.Object, ok bool)
}

// Config is what a ListerWatcher serves and how.
type Config struct {
	Stores Stores
	// Resource is the resource and the version the informer holds; its
	// group and resource name the store.
	Resource schema.GroupVersionResource
	// Convertor converts the store's internal objects to Resource's
	// version without copying what it can share
	// (runtime.UnsafeObjectConvertor of the API server's scheme).
	Convertor runtime.ObjectConvertor
	// View, if set, returns a watched internal object as Resource's
	// version without a copy, if it can: the same memory read as the
	// versioned type (PodView). The informer then holds the watch cache's
	// object itself, so it must have no transform that modifies objects.
	// Objects View cannot take are converted.
	View func(runtime.Object) (runtime.Object, bool)
	// Own, if set, is given each watched object that is the informer's
	// own, not shared with the watch cache, before the informer gets it
	// (Skiff interns them, see internal/intern).
	Own func(runtime.Object)
	// Client serves what the watch cache cannot: options with selectors,
	// or a resource without a cached store (watch cache off).
	Client *cache.ListWatch
}

// New returns a ListWatch serving c.Resource from the watch cache.
func New(c Config) *cache.ListWatch {
	l := &lister{c: c}
	return &cache.ListWatch{ListWithContextFunc: l.list, WatchFuncWithContext: l.watch}
}

type lister struct {
	c Config
}

// store returns the resource's cached store if it can serve opts.
func (l *lister) store(opts metav1.ListOptions) (storage.Interface, string, func() runtime.Object, bool) {
	if opts.LabelSelector != "" || opts.FieldSelector != "" {
		return nil, "", nil, false
	}
	return l.c.Stores.Cached(l.c.Resource.GroupResource())
}

func (l *lister) count(verb string, cached bool) {
	from := "client"
	if cached {
		from = "cache"
	}
	requests.WithLabelValues(l.c.Resource.Resource, verb, from).Inc()
}

// list is the registry's List (genericregistry.Store.ListPredicate) for
// every object of the resource, converted.
func (l *lister) list(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	st, key, newList, ok := l.store(opts)
	l.count("list", ok)
	if !ok {
		return l.c.Client.ListWithContext(ctx, opts)
	}
	pred := storage.Everything
	pred.Limit, pred.Continue = opts.Limit, opts.Continue
	list := newList()
	err := st.GetList(ctx, key, storage.ListOptions{
		ResourceVersion:      opts.ResourceVersion,
		ResourceVersionMatch: opts.ResourceVersionMatch,
		Predicate:            pred,
		Recursive:            true,
	}, list)
	if err != nil {
		return nil, storeerr.InterpretListError(err, l.c.Resource.GroupResource())
	}
	return l.convert(list)
}

// watch is the registry's Watch (genericregistry.Store.WatchPredicate)
// for every object of the resource, converted.
func (l *lister) watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	st, key, _, ok := l.store(opts)
	l.count("watch", ok)
	if !ok {
		return l.c.Client.WatchWithContext(ctx, opts)
	}
	// The watch ends when the caller's context does, but its own context
	// does not derive cancellation from it: the informers of a factory
	// started with a stop channel run on wait.ContextForChannel, which is
	// not one of the context package's types, and every context derived
	// from it costs a goroutine waiting for the channel for the watch's
	// lifetime (one per informer's watch). watcher.run ends the watch when
	// the caller's context is done.
	callerDone := ctx.Done()
	ctx = context.WithoutCancel(ctx)
	var cancel context.CancelFunc
	if opts.TimeoutSeconds != nil && *opts.TimeoutSeconds > 0 {
		// As the HTTP watch: it ends after the timeout the reflector
		// picked, and the reflector watches again from where it was.
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*opts.TimeoutSeconds)*time.Second)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	pred := storage.Everything
	pred.AllowWatchBookmarks = opts.AllowWatchBookmarks
	w, err := st.Watch(ctx, key, storage.ListOptions{
		ResourceVersion:   opts.ResourceVersion,
		Predicate:         pred,
		Recursive:         true,
		SendInitialEvents: opts.SendInitialEvents,
	})
	if err != nil {
		cancel()
		return nil, storeerr.InterpretWatchError(err, l.c.Resource.GroupResource(), "")
	}
	cw := &watcher{in: w, out: make(chan watch.Event), stop: make(chan struct{}), callerDone: callerDone, cancel: cancel}
	go cw.run(l.event)
	return cw, nil
}

// convert returns obj (internal) in the resource's version, with its
// kind cleared as client-go's decoders leave typed objects.
func (l *lister) convert(obj runtime.Object) (runtime.Object, error) {
	out, err := l.c.Convertor.ConvertToVersion(obj, l.c.Resource.GroupVersion())
	if err != nil {
		return nil, fmt.Errorf("convert %T to %s: %w", obj, l.c.Resource.GroupVersion(), err)
	}
	out.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	return out, nil
}

// event converts a watch event of the cacher for the informer.
func (l *lister) event(e watch.Event) watch.Event {
	if e.Type == watch.Error {
		return e // a *metav1.Status, as the HTTP watch sends it
	}
	obj, shared := cacherstorage.WatchedObject(e.Object)
	var out runtime.Object
	viewed := false
	if l.c.View != nil {
		out, viewed = l.c.View(obj)
	}
	if !viewed {
		var err error
		if out, err = l.convert(obj); err != nil {
			status := apierrors.NewInternalError(err).ErrStatus
			return watch.Event{Type: watch.Error, Object: &status}
		}
	}
	if !shared && l.c.Own != nil {
		l.c.Own(out)
	}
	return watch.Event{Type: e.Type, Object: out}
}

// watcher forwards a cacher watch's events, converted, until either side
// stops or the caller's context is done.
type watcher struct {
	in         watch.Interface
	out        chan watch.Event
	stop       chan struct{}
	callerDone <-chan struct{}
	once       sync.Once
	cancel     context.CancelFunc
}

func (w *watcher) run(convert func(watch.Event) watch.Event) {
	defer close(w.out)
	defer w.cancel()
	defer w.in.Stop()
	for {
		select {
		case e, ok := <-w.in.ResultChan():
			if !ok {
				return
			}
			select {
			case w.out <- convert(e):
			case <-w.stop:
				return
			case <-w.callerDone:
				return
			}
		case <-w.stop:
			return
		case <-w.callerDone:
			return
		}
	}
}

func (w *watcher) ResultChan() <-chan watch.Event { return w.out }

func (w *watcher) Stop() { w.once.Do(func() { close(w.stop) }) }
