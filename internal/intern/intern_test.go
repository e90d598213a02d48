package intern_test

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/skiff-sh/skiff/internal/intern"
)

// decoded returns a pod as a decoder would: every string and map its own
// allocation (round-tripped through protobuf).
func decoded(t testing.TB, name string, labels map[string]string, cpu string) *v1.Pod {
	t.Helper()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: "123457",
			Labels:          labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f", UID: "rs-uid", Controller: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				Time: &metav1.Time{Time: time.Unix(1700000000, 0)}, FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{".":{},"f:app":{}}}}`)}}},
		},
		Spec: v1.PodSpec{
			NodeSelector: map[string]string{"disk": "ssd"},
			Containers: []v1.Container{{
				Name: "app", Image: "registry.example/app:1.0", Args: []string{"--port", "8080"},
				Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
					v1.ResourceCPU: resource.MustParse(cpu), v1.ResourceMemory: resource.MustParse("16Mi")}},
			}},
			Tolerations: []v1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: "node.kubernetes.io/unreachable", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}},
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Volumes: []v1.Volume{{Name: "kube-api-access-" + name, VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
				DefaultMode: ptr.To[int32](420),
				Sources: []v1.VolumeProjection{
					{ServiceAccountToken: &v1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
					{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}}},
		},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: "10.0.0.1", PodIPs: []v1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: metav1.Time{Time: time.Unix(1700000000, 0)}}}},
	}
	return roundTrip(t, p)
}

// roundTrip returns p as a decoder would: every string, map, slice and
// pointer its own allocation.
func roundTrip(t testing.TB, p *v1.Pod) *v1.Pod {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out := &v1.Pod{}
	if err := out.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return out
}

// internUnchanged interns pods in order and fails if that changed any.
func internUnchanged(t *testing.T, tab *intern.Table, pods ...*v1.Pod) {
	t.Helper()
	want := make([]*v1.Pod, len(pods))
	for i, p := range pods {
		want[i] = p.DeepCopy()
	}
	for _, p := range pods {
		tab.Object(p)
	}
	for i, p := range pods {
		if !reflect.DeepEqual(p, want[i]) {
			t.Fatalf("interning changed pod %s:\n got %+v\nwant %+v", p.Name, p, want[i])
		}
	}
}

func sameString(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
func sameMap(a, b any) bool       { return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer() }
func sameBytes(a, b []byte) bool  { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }

func TestObjectSharesRepeatedValues(t *testing.T) {
	tab := intern.New(0)
	a := decoded(t, "pod-a", map[string]string{"app": "web", "pod-template-hash": "5d8f"}, "10m")
	b := decoded(t, "b", map[string]string{"app": "web", "pod-template-hash": "5d8f"}, "10m")
	c := decoded(t, "c", map[string]string{"app": "db"}, "20m")
	internUnchanged(t, tab, a, b, c)
	ca, cb := a.Spec.Containers[0], b.Spec.Containers[0]
	shared := []struct {
		what string
		ok   bool
	}{
		{"namespace", sameString(a.Namespace, b.Namespace)},
		{"image", sameString(ca.Image, cb.Image)},
		{"container name", sameString(ca.Name, cb.Name)},
		{"volume source strings", sameString(a.Spec.Volumes[0].Projected.Sources[1].ConfigMap.Name, b.Spec.Volumes[0].Projected.Sources[1].ConfigMap.Name)},
		{"managedFields manager", sameString(a.ManagedFields[0].Manager, b.ManagedFields[0].Manager)},
		{"args", sameString(ca.Args[1], cb.Args[1])},
		{"owner kind", sameString(a.OwnerReferences[0].Kind, b.OwnerReferences[0].Kind)},
		{"owner UID", sameString(string(a.OwnerReferences[0].UID), string(b.OwnerReferences[0].UID))},
		{"toleration key (named string type)", sameString(a.Spec.Tolerations[0].Key, b.Spec.Tolerations[0].Key)},
		{"pod IP and pod IPs", sameString(a.Status.PodIP, a.Status.PodIPs[0].IP)},
		{"phase", sameString(string(a.Status.Phase), string(c.Status.Phase))},
		{"labels map", sameMap(a.Labels, b.Labels)},
		{"node selector map (across different pods)", sameMap(a.Spec.NodeSelector, c.Spec.NodeSelector)},
		{"requests map", sameMap(ca.Resources.Requests, cb.Resources.Requests)},
		{"managedFields field set", sameBytes(a.ManagedFields[0].FieldsV1.Raw, b.ManagedFields[0].FieldsV1.Raw)},
	}
	for _, s := range shared {
		if !s.ok {
			t.Errorf("%s: not shared", s.what)
		}
	}
	notShared := []struct {
		what string
		ok   bool
	}{
		{"different labels", !sameMap(a.Labels, c.Labels)},
		{"different requests", !sameMap(ca.Resources.Requests, c.Spec.Containers[0].Resources.Requests)},
	}
	for _, s := range notShared {
		if !s.ok {
			t.Errorf("%s: shared", s.what)
		}
	}
	// An object's own name, UID and resourceVersion are never interned:
	// a second object with the same values keeps its own copies.
	a2 := decoded(t, "pod-a", nil, "10m")
	tab.Object(a2)
	if sameString(a.Name, a2.Name) || sameString(string(a.UID), string(a2.UID)) || sameString(a.ResourceVersion, a2.ResourceVersion) {
		t.Error("name, UID or resourceVersion interned")
	}
}

func samePtr[T any](a, b *T) bool { return a != nil && a == b }
func sameSlice[T any](a, b []T) bool {
	return len(a) > 0 && len(b) > 0 && unsafe.SliceData(a) == unsafe.SliceData(b)
}

func TestObjectSharesPointersAndSlices(t *testing.T) {
	tab := intern.New(0)
	mk := func(name, cpu string) *v1.Pod {
		p := decoded(t, name, map[string]string{"app": "web"}, cpu)
		p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{
			EmptyDir: &v1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("16Mi"))}}})
		return roundTrip(t, p)
	}
	// A structure is filed once its parts were: the first pods seen file
	// the parts, the later ones share the structures.
	for _, cpu := range []string{"10m", "10m", "20m", "20m"} {
		tab.Object(mk("warm", cpu))
	}
	a, b, c := mk("a", "10m"), mk("b", "10m"), mk("c", "20m")
	internUnchanged(t, tab, a, b, c)
	for _, s := range []struct {
		what   string
		shared bool
		want   bool
	}{
		{"tolerations", sameSlice(a.Spec.Tolerations, c.Spec.Tolerations), true},
		{"toleration seconds", samePtr(a.Spec.Tolerations[0].TolerationSeconds, c.Spec.Tolerations[1].TolerationSeconds), true},
		{"token volume projection", samePtr(a.Spec.Volumes[0].Projected, c.Spec.Volumes[0].Projected), true},
		{"owner references", sameSlice(a.OwnerReferences, b.OwnerReferences), true},
		{"grace period", samePtr(a.Spec.TerminationGracePeriodSeconds, c.Spec.TerminationGracePeriodSeconds), true},
		{"containers, same requests", sameSlice(a.Spec.Containers, b.Spec.Containers), true},
		{"containers, other requests", sameSlice(a.Spec.Containers, c.Spec.Containers), false},
		{"volumes (each pod's own token volume name)", sameSlice(a.Spec.Volumes, b.Spec.Volumes), false},
		{"conditions (timestamps)", sameSlice(a.Status.Conditions, b.Status.Conditions), false},
		{"managedFields (timestamps)", sameSlice(a.ManagedFields, b.ManagedFields), false},
		{"a quantity behind a pointer (its String caches in place)", samePtr(a.Spec.Volumes[1].EmptyDir, b.Spec.Volumes[1].EmptyDir), false},
	} {
		if s.shared != s.want {
			t.Errorf("%s: shared %v, want %v", s.what, s.shared, s.want)
		}
	}
	// A pod that differs only in a number shares neither the slice nor
	// the pointer holding it.
	d := mk("d", "10m")
	d.Spec.Tolerations[1].TolerationSeconds = ptr.To[int64](301)
	d = roundTrip(t, d)
	internUnchanged(t, tab, d)
	if sameSlice(a.Spec.Tolerations, d.Spec.Tolerations) || samePtr(a.Spec.Tolerations[1].TolerationSeconds, d.Spec.Tolerations[1].TolerationSeconds) {
		t.Error("tolerations with other seconds shared")
	}
	if !samePtr(a.Spec.Tolerations[0].TolerationSeconds, d.Spec.Tolerations[0].TolerationSeconds) {
		t.Error("equal toleration seconds not shared")
	}

	// Sharing outlasts garbage collections: the table keeps its strings,
	// so a pod decoded after one still matches what was filed before.
	runtime.GC()
	runtime.GC()
	e := mk("e", "10m")
	internUnchanged(t, tab, e)
	if !sameString(a.Namespace, e.Namespace) || !sameSlice(a.Spec.Tolerations, e.Spec.Tolerations) || !samePtr(a.Spec.Volumes[0].Projected, e.Spec.Volumes[0].Projected) {
		t.Error("a pod decoded after a GC does not share with those before it")
	}

	// A shared slice has no spare room: appending to one pod's copies.
	if cap(a.Spec.Tolerations) != len(a.Spec.Tolerations) {
		t.Fatalf("shared slice has cap %d, len %d", cap(a.Spec.Tolerations), len(a.Spec.Tolerations))
	}
	a.Spec.Tolerations = append(a.Spec.Tolerations, v1.Toleration{Key: "extra"})
	if len(c.Spec.Tolerations) != 2 || c.Spec.Tolerations[1].Key != "node.kubernetes.io/unreachable" {
		t.Error("appending to one pod's shared tolerations changed another's")
	}
}

func TestObjectMapsWithAnyBytes(t *testing.T) {
	// Map keys and values may hold any byte, NUL included: a map whose
	// one value spells out another map's entries is not that map.
	tab := intern.New(0)
	a := decoded(t, "a", map[string]string{"a": "x", "b": "y"}, "10m")
	b := decoded(t, "b", map[string]string{"a": "x\x00b\x00y"}, "10m")
	c := decoded(t, "c", map[string]string{"a": "x\x00b\x00y\x00"}, "10m")
	internUnchanged(t, tab, a, b, c)
	if sameMap(a.Labels, b.Labels) || sameMap(b.Labels, c.Labels) {
		t.Error("maps with different contents shared")
	}
}

func TestObjectSharesFieldSets(t *testing.T) {
	withFields := func(raw []byte) *v1.Pod {
		p := decoded(t, "p", nil, "10m")
		p.ManagedFields[0].FieldsV1.Raw = raw
		return p
	}
	for _, tc := range []struct {
		name   string
		a, b   []byte
		shared bool
	}{
		{"same bytes", []byte(`{"f:spec":{}}`), []byte(`{"f:spec":{}}`), true},
		{"different bytes", []byte(`{"f:spec":{}}`), []byte(`{"f:status":{}}`), false},
		{"over the size limit", []byte(strings.Repeat("x", 16<<10+1)), []byte(strings.Repeat("x", 16<<10+1)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := intern.New(0)
			a, b := withFields(tc.a), withFields(tc.b)
			want := b.DeepCopy()
			tab.Object(a)
			tab.Object(b)
			if got := sameBytes(a.ManagedFields[0].FieldsV1.Raw, b.ManagedFields[0].FieldsV1.Raw); got != tc.shared {
				t.Fatalf("field sets shared: %v, want %v", got, tc.shared)
			}
			if !reflect.DeepEqual(b, want) {
				t.Fatal("interning changed the pod")
			}
		})
	}
}

func TestObjectLimits(t *testing.T) {
	long := strings.Repeat("x", 300)
	big := map[string]string{}
	for i := range 40 {
		big[fmt.Sprint("k", i)] = "v"
	}
	mk := func() *v1.Pod {
		p := decoded(t, "p", map[string]string{"a": "1"}, "10m")
		p.Annotations = map[string]string{"note": strings.Clone(long)}
		p.Spec.Containers[0].Image = strings.Clone(long)
		p.Spec.NodeSelector = map[string]string{}
		for k, v := range big {
			p.Spec.NodeSelector[k] = v
		}
		return p
	}
	tab := intern.New(0)
	a, b := mk(), mk()
	tab.Object(a)
	tab.Object(b)
	if sameString(a.Spec.Containers[0].Image, b.Spec.Containers[0].Image) {
		t.Error("a string over the length limit was interned")
	}
	if sameMap(a.Spec.NodeSelector, b.Spec.NodeSelector) {
		t.Error("a map over the entry limit was shared")
	}
	if !sameMap(a.Labels, b.Labels) {
		t.Error("small equal maps not shared")
	}

	// A full table starts over: it never keeps more than max maps.
	small := intern.New(2)
	for i := range 10 {
		p := decoded(t, "x", map[string]string{"app": fmt.Sprint(i)}, fmt.Sprint(i+1, "m"))
		small.Object(p)
		if n := small.Len(); n > 2 {
			t.Fatalf("table holds %d maps, max 2", n)
		}
	}
}

// tree is a recursive type, as CRD schemas (JSONSchemaProps) are.
type tree struct {
	Name     string
	Children []tree
	Props    map[string]tree // not a map of strings: left alone
	Next     *tree
	Raw      []byte
	Any      any
	hidden   string
}

func TestObjectRecursiveAndOtherKinds(t *testing.T) {
	tab := intern.New(0)
	mk := func() *tree {
		return &tree{
			Name:     strings.Clone("root"),
			Children: []tree{{Name: strings.Clone("child")}},
			Next:     &tree{Name: strings.Clone("next"), Next: &tree{Name: strings.Clone("deeper")}},
			Props:    map[string]tree{"p": {Name: "prop"}},
			Raw:      []byte("raw"),
			Any:      strings.Clone("any"),
			hidden:   strings.Clone("hidden"),
		}
	}
	a, b := mk(), mk()
	tab.Object(a)
	tab.Object(b)
	for _, pair := range [][2]string{{a.Name, b.Name}, {a.Children[0].Name, b.Children[0].Name}, {a.Next.Next.Name, b.Next.Next.Name}} {
		if !sameString(pair[0], pair[1]) {
			t.Errorf("%q not interned", pair[0])
		}
	}
	if sameString(a.hidden, b.hidden) || sameString(a.Any.(string), b.Any.(string)) {
		t.Error("unexported field or interface value interned")
	}
	// Not a pointer to a struct: left alone, no panic.
	for _, v := range []any{nil, "s", 3, tree{}, (*tree)(nil), &[]string{"x"}} {
		tab.Object(v)
	}
}

func TestObjectConcurrent(t *testing.T) {
	tab := intern.New(4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				p := decoded(t, fmt.Sprint("p", g, i), map[string]string{"app": fmt.Sprint(i % 7)}, "10m")
				want := p.DeepCopy()
				tab.Object(p)
				if !reflect.DeepEqual(p, want) {
					t.Errorf("pod %s changed", p.Name)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkObjectPod(b *testing.B) {
	tab := intern.New(0)
	pods := make([]*v1.Pod, 1000)
	for i := range pods {
		pods[i] = decoded(b, fmt.Sprint("p", i), map[string]string{"app": "web", "pod-template-hash": "5d8f"}, "10m")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tab.Object(pods[i%len(pods)])
		i++
	}
}
