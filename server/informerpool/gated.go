package informerpool

import (
	"context"
	"reflect"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/informers/admissionregistration"
	"k8s.io/client-go/informers/apiserverinternal"
	"k8s.io/client-go/informers/apps"
	"k8s.io/client-go/informers/autoscaling"
	"k8s.io/client-go/informers/batch"
	"k8s.io/client-go/informers/certificates"
	"k8s.io/client-go/informers/coordination"
	"k8s.io/client-go/informers/core"
	"k8s.io/client-go/informers/discovery"
	"k8s.io/client-go/informers/events"
	"k8s.io/client-go/informers/extensions"
	"k8s.io/client-go/informers/flowcontrol"
	"k8s.io/client-go/informers/internalinterfaces"
	"k8s.io/client-go/informers/lifecycle"
	"k8s.io/client-go/informers/networking"
	"k8s.io/client-go/informers/node"
	"k8s.io/client-go/informers/policy"
	"k8s.io/client-go/informers/rbac"
	"k8s.io/client-go/informers/resource"
	"k8s.io/client-go/informers/scheduling"
	"k8s.io/client-go/informers/storage"
	"k8s.io/client-go/informers/storagemigration"
	"k8s.io/client-go/tools/cache"
)

// gated is a factory (the API server's) as the control loops see it: the
// same informers, whose event handlers are not called before open is
// closed, and whose handlers that ask for no particular resync get the
// control loops' period rather than the factory's.
//
// The informers may already be running: the API server starts its own
// before it serves. Upstream's controllers add their handlers while being
// built and some set the listers those handlers read only afterwards (the
// disruption controller's pod handler reads its PDB lister), counting on
// their factory not running yet. On a running informer a new handler is
// called at once with every object, so the gate holds those calls until
// the controller manager starts its informers, the moment upstream's own
// factory would have started.
type gated struct {
	base   informers.SharedInformerFactory
	open   <-chan struct{}
	done   <-chan struct{}
	resync time.Duration
}

var _ informers.SharedInformerFactory = (*gated)(nil)

func newGated(ctx context.Context, base informers.SharedInformerFactory, open <-chan struct{}, resync time.Duration) *gated {
	return &gated{base: base, open: open, done: ctx.Done(), resync: resync}
}

func (g *gated) wrap(i cache.SharedIndexInformer) cache.SharedIndexInformer {
	if i == nil {
		return nil
	}
	return &gatedInformer{SharedIndexInformer: i, g: g}
}

func (g *gated) InformerFor(obj runtime.Object, newFunc internalinterfaces.NewInformerFunc) cache.SharedIndexInformer {
	return g.wrap(g.base.InformerFor(obj, newFunc))
}

func (g *gated) ForResource(r schema.GroupVersionResource) (informers.GenericInformer, error) {
	gi, err := g.base.ForResource(r)
	if err != nil {
		return nil, err
	}
	return genericInformer{informer: g.wrap(gi.Informer()), resource: r.GroupResource()}, nil
}

func (g *gated) InformerName() *cache.InformerName { return g.base.InformerName() }
func (g *gated) Start(stop <-chan struct{})        { g.base.Start(stop) }
func (g *gated) StartWithContext(ctx context.Context) {
	g.base.StartWithContext(ctx)
}

// Shutdown does nothing: the API server owns base and shuts it down.
func (g *gated) Shutdown() {}
func (g *gated) WaitForCacheSync(stop <-chan struct{}) map[reflect.Type]bool {
	return g.base.WaitForCacheSync(stop)
}
func (g *gated) WaitForCacheSyncWithContext(ctx context.Context) cache.SyncResult {
	return g.base.WaitForCacheSyncWithContext(ctx)
}

// The groups are built on g, as the generated factory builds them on
// itself, so every typed informer comes through g.InformerFor.
func (g *gated) Admissionregistration() admissionregistration.Interface {
	return admissionregistration.New(g, "", nil)
}
func (g *gated) Internal() apiserverinternal.Interface { return apiserverinternal.New(g, "", nil) }
func (g *gated) Apps() apps.Interface                  { return apps.New(g, "", nil) }
func (g *gated) Autoscaling() autoscaling.Interface    { return autoscaling.New(g, "", nil) }
func (g *gated) Batch() batch.Interface                { return batch.New(g, "", nil) }
func (g *gated) Certificates() certificates.Interface  { return certificates.New(g, "", nil) }
func (g *gated) Coordination() coordination.Interface  { return coordination.New(g, "", nil) }
func (g *gated) Core() core.Interface                  { return core.New(g, "", nil) }
func (g *gated) Discovery() discovery.Interface        { return discovery.New(g, "", nil) }
func (g *gated) Events() events.Interface              { return events.New(g, "", nil) }
func (g *gated) Extensions() extensions.Interface      { return extensions.New(g, "", nil) }
func (g *gated) Flowcontrol() flowcontrol.Interface    { return flowcontrol.New(g, "", nil) }
func (g *gated) Lifecycle() lifecycle.Interface        { return lifecycle.New(g, "", nil) }
func (g *gated) Networking() networking.Interface      { return networking.New(g, "", nil) }
func (g *gated) Node() node.Interface                  { return node.New(g, "", nil) }
func (g *gated) Policy() policy.Interface              { return policy.New(g, "", nil) }
func (g *gated) Rbac() rbac.Interface                  { return rbac.New(g, "", nil) }
func (g *gated) Resource() resource.Interface          { return resource.New(g, "", nil) }
func (g *gated) Scheduling() scheduling.Interface      { return scheduling.New(g, "", nil) }
func (g *gated) Storage() storage.Interface            { return storage.New(g, "", nil) }
func (g *gated) Storagemigration() storagemigration.Interface {
	return storagemigration.New(g, "", nil)
}

type genericInformer struct {
	informer cache.SharedIndexInformer
	resource schema.GroupResource
}

func (gi genericInformer) Informer() cache.SharedIndexInformer { return gi.informer }
func (gi genericInformer) Lister() cache.GenericLister {
	return cache.NewGenericLister(gi.informer.GetIndexer(), gi.resource)
}

// gatedInformer is one informer of the factory as the control loops see
// it; everything but adding handlers is the informer's own.
type gatedInformer struct {
	cache.SharedIndexInformer
	g *gated
}

func (i *gatedInformer) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return i.SharedIndexInformer.AddEventHandlerWithResyncPeriod(i.g.handler(h), i.g.resync)
}

func (i *gatedInformer) AddEventHandlerWithResyncPeriod(h cache.ResourceEventHandler, resync time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	return i.SharedIndexInformer.AddEventHandlerWithResyncPeriod(i.g.handler(h), resync)
}

func (i *gatedInformer) AddEventHandlerWithOptions(h cache.ResourceEventHandler, opts cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	if opts.ResyncPeriod == nil {
		opts.ResyncPeriod = &i.g.resync
	}
	return i.SharedIndexInformer.AddEventHandlerWithOptions(i.g.handler(h), opts)
}

func (g *gated) handler(h cache.ResourceEventHandler) cache.ResourceEventHandler {
	return gatedHandler{h: h, g: g}
}

// gatedHandler waits for the gate before each call. Each handler has its
// own goroutine in the informer, so waiting holds up only this handler;
// its notifications queue meanwhile. If the pool ends first they are
// dropped.
type gatedHandler struct {
	h cache.ResourceEventHandler
	g *gated
}

func (h gatedHandler) wait() bool {
	select {
	case <-h.g.open:
		return true
	default:
	}
	select {
	case <-h.g.open:
		return true
	case <-h.g.done:
		return false
	}
}

func (h gatedHandler) OnAdd(obj any, initial bool) {
	if h.wait() {
		h.h.OnAdd(obj, initial)
	}
}

func (h gatedHandler) OnUpdate(old, obj any) {
	if h.wait() {
		h.h.OnUpdate(old, obj)
	}
}

func (h gatedHandler) OnDelete(obj any) {
	if h.wait() {
		h.h.OnDelete(obj)
	}
}
