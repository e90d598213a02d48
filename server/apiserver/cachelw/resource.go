package cachelw

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Resource returns the resource a typed informer's object (a type of the
// client scheme, client-go's) lists and watches, if the server's scheme
// (the API server's) converts its internal objects to that version; ok is
// false otherwise. Built-in kinds' resources follow the plural rules of
// meta.UnsafeGuessKindToResource, which knows "endpoints".
func Resource(example runtime.Object, client, server *runtime.Scheme) (gvr schema.GroupVersionResource, ok bool) {
	gvks, _, err := client.ObjectKinds(example)
	if err != nil || len(gvks) == 0 {
		return schema.GroupVersionResource{}, false
	}
	gvk := gvks[0]
	if !server.Recognizes(gvk) || !server.Recognizes(gvk.GroupKind().WithVersion(runtime.APIVersionInternal)) {
		return schema.GroupVersionResource{}, false
	}
	gvr, _ = meta.UnsafeGuessKindToResource(gvk)
	return gvr, true
}

// GroupGetter requests gv's paths with c, a REST client of any version of
// a clientset (for cache.NewFilteredListWatchFromClient): a clientset's
// clients share its transport and its codecs, which decode every version
// the clientset knows.
func GroupGetter(c rest.Interface, gv schema.GroupVersion) cache.Getter {
	return groupGetter{c: c, gv: gv}
}

type groupGetter struct {
	c  rest.Interface
	gv schema.GroupVersion
}

func (g groupGetter) Get() *rest.Request {
	if g.gv.Group == "" {
		return g.c.Get().AbsPath("/api", g.gv.Version)
	}
	return g.c.Get().AbsPath("/apis", g.gv.Group, g.gv.Version)
}
