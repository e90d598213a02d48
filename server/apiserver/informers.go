package apiserver

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/informers/internalinterfaces"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/pkg/api/legacyscheme"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/cachelw"
)

// cacheInformers makes every informer of the API server's shared factory
// (which the controller manager and the scheduler share) list and watch
// the watch cache in-process (cachelw) rather than over a loopback
// request, through Skiff's client-go patch (informers.SetNewInformer):
// each informer is made when a component first asks for it, as before.
// Objects share the watch cache's below their top-level struct (unsafe
// conversion); a pod is the watch cache's object itself
// (cachelw.PodView), so the pod informer keeps managedFields (shared,
// they cost nothing) where the factory's transform trims them from its
// other informers' own top-level copies. The deep copies they get
// (initial events) are interned. A type the API server's scheme cannot
// convert to keeps its generated informer. The constructors ignore a
// factory namespace and list-option tweaks, which the kube-apiserver's
// factory does not have.
func cacheInformers(f informers.SharedInformerFactory, stores cachelw.Stores, objects *intern.Table) {
	cachelw.RegisterMetrics()
	convertor := kruntime.UnsafeObjectConvertor(legacyscheme.Scheme)
	own := func(obj kruntime.Object) { objects.Object(obj) }
	informers.SetNewInformer(f, func(example kruntime.Object, def internalinterfaces.NewInformerFunc) internalinterfaces.NewInformerFunc {
		gvr, ok := cachelw.Resource(example, clientgoscheme.Scheme, legacyscheme.Scheme)
		if !ok {
			return def
		}
		var view func(kruntime.Object) (kruntime.Object, bool)
		if _, ok := example.(*corev1.Pod); ok {
			view = cachelw.PodView()
		}
		return func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			// What the watch cache cannot serve goes over the API, as
			// client-go's generated informers of the type would.
			client := cache.NewFilteredListWatchFromClient(cachelw.GroupGetter(c.CoreV1().RESTClient(), gvr.GroupVersion()), gvr.Resource, metav1.NamespaceAll, func(*metav1.ListOptions) {})
			lw := cachelw.New(cachelw.Config{Stores: stores, Resource: gvr, Convertor: convertor, View: view, Own: own, Client: client})
			return cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, c), example,
				cache.SharedIndexInformerOptions{
					ResyncPeriod: resync,
					Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
					Identifier:   f.InformerName().WithResource(gvr),
				})
		}
	})
	// Made now, before the factory starts: its transform would trim the
	// watch cache's own pods in place.
	_ = f.Core().V1().Pods().Informer().SetTransform(nil)
}
