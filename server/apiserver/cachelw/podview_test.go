package cachelw_test

import (
	"reflect"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kubernetes/pkg/apis/core"
	k8sv1 "k8s.io/kubernetes/pkg/apis/core/v1"
	"sigs.k8s.io/randfill"

	"github.com/skiff-sh/skiff/server/apiserver/cachelw"
)

// TestPodViewIsTheConversion: the view of random pods equals the generated
// conversion's result, and shares the pod's memory.
func TestPodViewIsTheConversion(t *testing.T) {
	view := cachelw.PodView()
	if view == nil {
		t.Fatal("core.Pod and v1.Pod no longer have the same layout: pods are converted (a copy each); see PodView")
	}
	f := randfill.NewWithSeed(1).NilChance(0.2).NumElements(0, 2)
	for i := range 200 {
		in := &core.Pod{}
		f.Fill(in)
		in.TypeMeta = metav1.TypeMeta{}
		want := &corev1.Pod{}
		if err := k8sv1.Convert_core_Pod_To_v1_Pod(in, want, nil); err != nil {
			t.Fatal(err)
		}
		got, ok := view(in)
		if !ok {
			t.Fatalf("pod %d not viewed", i)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("pod %d: the view differs from the conversion:\n got %+v\nwant %+v", i, got, want)
		}
		if unsafe.Pointer(got.(*corev1.Pod)) != unsafe.Pointer(in) {
			t.Fatalf("pod %d: the view is a copy", i)
		}
	}
}

func TestPodViewDeclines(t *testing.T) {
	view := cachelw.PodView()
	if view == nil {
		t.Fatal("no view: core.Pod and v1.Pod layouts differ")
	}
	for _, obj := range []runtime.Object{
		&core.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}}, // a kind it would expose
		&core.Node{},
		&corev1.Pod{},
	} {
		if _, ok := view(obj); ok {
			t.Errorf("%T %v viewed", obj, obj.GetObjectKind().GroupVersionKind())
		}
	}
}
