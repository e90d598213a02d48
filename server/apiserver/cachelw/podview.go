package cachelw

import (
	"reflect"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kubernetes/pkg/apis/core"

	"github.com/skiff-sh/skiff/internal/layout"
)

// PodView returns a Config.View for pods: the watch cache's *core.Pod read
// as a *v1.Pod, or nil if the two types' layouts differ (then pods are
// converted). The conversion between them copies ObjectMeta and casts
// PodSpec and PodStatus (conversion-gen found their layouts identical);
// the view skips the one copy left, the top-level struct (~1.4 KB a pod),
// so an informer's pod costs nothing beyond the watch cache's. The viewed
// pod is the watch cache's object: read-only, and with the managedFields
// the informer would otherwise trim.
func PodView() func(runtime.Object) (runtime.Object, bool) {
	if !layout.Same(reflect.TypeFor[core.Pod](), reflect.TypeFor[corev1.Pod]()) {
		return nil
	}
	return func(obj runtime.Object) (runtime.Object, bool) {
		p, ok := obj.(*core.Pod)
		if !ok || !p.GetObjectKind().GroupVersionKind().Empty() {
			return nil, false
		}
		return (*corev1.Pod)(unsafe.Pointer(p)), true
	}
}
