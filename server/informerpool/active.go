package informerpool

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1informers "k8s.io/client-go/informers/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// terminal reports whether obj is a pod that has finished (Succeeded or
// Failed), or a deletion tombstone of one: the pods upstream's scheduler
// informer leaves out.
func terminal(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	return ok && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed)
}

// activePods is a PodInformer over the pool's pod informer that shows only
// pods that are not terminal.
type activePods struct {
	informer *activeInformer
}

var _ corev1informers.TypedPodInformer = (*activePods)(nil)

func newActivePods(all corev1informers.TypedPodInformer) *activePods {
	inf := all.Informer()
	return &activePods{informer: &activeInformer{
		SharedIndexInformer: inf,
		indexer:             activeIndexer{inf.GetIndexer()},
	}}
}

func (a *activePods) Informer() cache.SharedIndexInformer { return a.informer }

func (a *activePods) TypedInformer() corev1informers.PodIndexInformer {
	return cache.NewTypedSharedIndexInformer[*corev1.Pod](a.informer)
}

func (a *activePods) Lister() corev1listers.PodLister {
	return corev1listers.NewPodLister(a.informer.indexer)
}

// activeInformer filters what handlers and stores see; running, syncing
// and handler removal are the shared informer's.
type activeInformer struct {
	cache.SharedIndexInformer
	indexer activeIndexer
}

func (a *activeInformer) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return a.SharedIndexInformer.AddEventHandler(activeHandler{h})
}

func (a *activeInformer) AddEventHandlerWithResyncPeriod(h cache.ResourceEventHandler, resync time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	return a.SharedIndexInformer.AddEventHandlerWithResyncPeriod(activeHandler{h}, resync)
}

func (a *activeInformer) AddEventHandlerWithOptions(h cache.ResourceEventHandler, o cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	return a.SharedIndexInformer.AddEventHandlerWithOptions(activeHandler{h}, o)
}

func (a *activeInformer) GetStore() cache.Store { return a.indexer }

func (a *activeInformer) GetIndexer() cache.Indexer { return a.indexer }

// AddIndexers adds the indexers the shared informer lacks: another
// component (or an earlier scheduler profile) may have added one of the
// same name, and the informer refuses a name twice.
func (a *activeInformer) AddIndexers(ix cache.Indexers) error {
	have := a.SharedIndexInformer.GetIndexer().GetIndexers()
	add := cache.Indexers{}
	for name, f := range ix {
		if have[name] == nil {
			add[name] = f
		}
	}
	if len(add) == 0 {
		return nil
	}
	return a.SharedIndexInformer.AddIndexers(add)
}

// SetTransform is refused: the pool's transform is set, and a view must
// not change what other components see.
func (a *activeInformer) SetTransform(cache.TransformFunc) error {
	return fmt.Errorf("informerpool: the shared pod informer's transform is the pool's")
}

// activeHandler turns the shared informer's notifications into those of an
// informer that lists and watches only pods that are not terminal: a pod
// that turns terminal leaves the set (a delete, as a field-selected watch
// sends), terminal pods are never added, and their deletion is not
// repeated.
type activeHandler struct {
	next cache.ResourceEventHandler
}

func (h activeHandler) OnAdd(obj any, initial bool) {
	if !terminal(obj) {
		h.next.OnAdd(obj, initial)
	}
}

func (h activeHandler) OnUpdate(oldObj, newObj any) {
	switch wasDone, done := terminal(oldObj), terminal(newObj); {
	case !wasDone && !done:
		h.next.OnUpdate(oldObj, newObj)
	case !wasDone && done:
		h.next.OnDelete(newObj)
	case wasDone && !done:
		// Phases do not go back; if one did, the pod would re-enter
		// the set, as it would re-match the field selector.
		h.next.OnAdd(newObj, false)
	}
}

func (h activeHandler) OnDelete(obj any) {
	if !terminal(obj) {
		h.next.OnDelete(obj)
	}
}

// activeIndexer is the shared pod store without terminal pods. Writes go
// to the shared store (only its informer writes).
type activeIndexer struct {
	cache.Indexer
}

func (x activeIndexer) List() []any { return active(x.Indexer.List()) }

func (x activeIndexer) ListKeys() []string { return x.activeKeys(x.Indexer.ListKeys()) }

func (x activeIndexer) Get(obj any) (any, bool, error) {
	return x.found(x.Indexer.Get(obj))
}

func (x activeIndexer) GetByKey(key string) (any, bool, error) {
	return x.found(x.Indexer.GetByKey(key))
}

func (x activeIndexer) Index(name string, obj any) ([]any, error) {
	objs, err := x.Indexer.Index(name, obj)
	return active(objs), err
}

func (x activeIndexer) ByIndex(name, value string) ([]any, error) {
	objs, err := x.Indexer.ByIndex(name, value)
	return active(objs), err
}

func (x activeIndexer) IndexKeys(name, value string) ([]string, error) {
	keys, err := x.Indexer.IndexKeys(name, value)
	return x.activeKeys(keys), err
}

func (x activeIndexer) found(obj any, exists bool, err error) (any, bool, error) {
	if err != nil || !exists || terminal(obj) {
		return nil, false, err
	}
	return obj, true, nil
}

func (x activeIndexer) activeKeys(keys []string) []string {
	out := keys[:0:0]
	for _, k := range keys {
		if obj, ok, _ := x.Indexer.GetByKey(k); ok && !terminal(obj) {
			out = append(out, k)
		}
	}
	return out
}

// active returns objs without terminal pods, objs itself when none is.
func active(objs []any) []any {
	for i, o := range objs {
		if terminal(o) {
			out := append(make([]any, 0, len(objs)-1), objs[:i]...)
			for _, o := range objs[i+1:] {
				if !terminal(o) {
					out = append(out, o)
				}
			}
			return out
		}
	}
	return objs
}
