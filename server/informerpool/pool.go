// Package informerpool gives the control loops that run in the server
// process, upstream's kube-controller-manager and kube-scheduler, the API
// server's own client-go shared informer factory, so each resource is
// listed, watched, decoded and kept once in the process instead of once
// per component (at 30,000 pods each extra copy of every pod is ~150-270
// MB).
//
// The controller manager gets the factory itself. The scheduler gets a view
// whose pod informer holds only pods that are not terminal, which is what
// upstream's scheduler informer holds through its field selector
// (status.phase!=Succeeded,status.phase!=Failed): to the scheduler's
// handlers a pod turning terminal is deleted, and its listers do not find
// it. Both hand the factory to upstream through Skiff's patch to
// k8s.io/kubernetes (third_party/patches).
//
// The API server starts its informers before it serves; the ones only the
// components use start when the controller manager starts its own.
// Upstream's Run does that after building every controller, and some
// controllers add event handlers before they set the listers those
// handlers read (the disruption controller's pod handler reads its PDB
// lister), so the components' handlers are not called before that moment,
// even on informers already running (gated). The scheduler's Start waits
// for it too. The components' informers then run until the pool's context
// ends, whatever the components' own contexts. That fits the server, which
// makes a pool only with a controller manager, runs both in one process
// and ends when either ends (a lost lease included); components that
// restart within one process, or a scheduler whose process does not run
// the controller manager, would need a pool per run.
package informerpool

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/informers/core"
	corev1informers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/informers/internalinterfaces"
	"k8s.io/client-go/tools/cache"

	corev1 "k8s.io/api/core/v1"
)

// Pool is one shared informer factory for the in-process control loops.
type Pool struct {
	ctx     context.Context
	factory informers.SharedInformerFactory
	// cmStarted is closed at the controller manager's first Start.
	cmStarted chan struct{}
	cmOnce    sync.Once
}

// New makes a pool over base, the API server's own informer factory
// (apiserver.Config.Informers), so the process keeps one informer, and one
// copy of the objects, per resource: a pod is kept by the API server's
// watch cache and shared by these informers (server/apiserver/cachelw),
// not copied a second and third time. base's objects should not cost
// their managedFields, which neither component reads: the API server's
// factory trims them, as both components' own factories do, except from
// pods, which are the watch cache's objects and cost nothing more with
// them. Handlers the
// components add get the controller manager's resync period, not base's;
// informers that only the components use are made in base and started on
// ctx.
func New(ctx context.Context, base informers.SharedInformerFactory) *Pool {
	started := make(chan struct{})
	return &Pool{ctx: ctx, factory: newGated(ctx, base, started, resyncPeriod()), cmStarted: started}
}

// resyncPeriod is the controller manager's default: a random period
// between --min-resync-period (12 h) and twice that, so components'
// resyncs do not line up.
func resyncPeriod() time.Duration {
	const min = 12 * time.Hour
	return min + time.Duration(rand.Int64N(int64(min)))
}

// ControllerManager is the controller manager's factory. Its first Start
// starts the pool's informers and calls started: upstream's Run starts
// the informers right after building every controller.
func (p *Pool) ControllerManager(started func()) informers.SharedInformerFactory {
	return &owned{SharedInformerFactory: p.factory, ctx: p.ctx, onStart: func() {
		p.cmOnce.Do(func() {
			close(p.cmStarted)
			if started != nil {
				started()
			}
		})
	}}
}

// Scheduler is the scheduler's factory: the pool's, except that its pod
// informer holds only pods that are not terminal. Its Start waits for the
// controller manager's.
func (p *Pool) Scheduler() informers.SharedInformerFactory {
	return &schedulerView{
		owned: owned{SharedInformerFactory: p.factory, ctx: p.ctx, after: p.cmStarted},
		pods:  newActivePods(p.factory.Core().V1().Pods()),
	}
}

// owned is the factory as a component sees it: Start runs informers for
// the pool's lifetime, and Shutdown is the pool's business.
type owned struct {
	informers.SharedInformerFactory
	ctx context.Context
	// after, if set, is waited for before Start starts anything.
	after <-chan struct{}
	// onStart, if set, is called after every Start.
	onStart func()
}

// Start and StartWithContext run the informers on the pool's context, a
// standard one: client-go's Start wraps its stop channel in a context
// whose cancellation costs every informer a watching goroutine.
func (o *owned) Start(<-chan struct{}) { o.StartWithContext(o.ctx) }

func (o *owned) StartWithContext(context.Context) {
	if o.after != nil {
		select {
		case <-o.after:
		case <-o.ctx.Done():
			return
		}
	}
	o.SharedInformerFactory.StartWithContext(o.ctx)
	if o.onStart != nil {
		o.onStart()
	}
}

func (o *owned) Shutdown() {}

// schedulerView replaces the pod informer wherever the scheduler can ask
// for it.
type schedulerView struct {
	owned
	pods *activePods
}

var podResource = corev1.SchemeGroupVersion.WithResource("pods")

func (v *schedulerView) Core() core.Interface { return viewCore{v.owned.Core(), v.pods} }

func (v *schedulerView) InformerFor(obj runtime.Object, newFunc internalinterfaces.NewInformerFunc) cache.SharedIndexInformer {
	if _, ok := obj.(*corev1.Pod); ok {
		return v.pods.Informer()
	}
	return v.owned.InformerFor(obj, newFunc)
}

func (v *schedulerView) ForResource(r schema.GroupVersionResource) (informers.GenericInformer, error) {
	if r == podResource {
		return genericPods{v.pods}, nil
	}
	return v.owned.ForResource(r)
}

type viewCore struct {
	core.Interface
	pods *activePods
}

func (c viewCore) V1() corev1informers.Interface { return viewCoreV1{c.Interface.V1(), c.pods} }

type viewCoreV1 struct {
	corev1informers.Interface
	pods *activePods
}

func (c viewCoreV1) Pods() corev1informers.TypedPodInformer { return c.pods }

type genericPods struct{ pods *activePods }

func (g genericPods) Informer() cache.SharedIndexInformer { return g.pods.Informer() }

func (g genericPods) Lister() cache.GenericLister {
	return cache.NewGenericLister(g.pods.informer.GetIndexer(), podResource.GroupResource())
}
