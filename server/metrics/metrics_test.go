package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/metrics/pkg/apis/metrics"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func cpuAt(nano uint64, at time.Time) *statsv1alpha1.CPUStats {
	return &statsv1alpha1.CPUStats{Time: metav1.NewTime(at), UsageNanoCores: &nano}
}

func mem(ws uint64) *statsv1alpha1.MemoryStats {
	return &statsv1alpha1.MemoryStats{WorkingSetBytes: &ws}
}

func ctr(name string, nano, ws uint64, at time.Time) statsv1alpha1.ContainerStats {
	return statsv1alpha1.ContainerStats{Name: name, CPU: cpuAt(nano, at), Memory: mem(ws)}
}

func pod(ns, name string, containers ...statsv1alpha1.ContainerStats) statsv1alpha1.PodStats {
	return statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Namespace: ns, Name: name}, Containers: containers}
}

func summary(node string, nano, ws uint64, pods ...statsv1alpha1.PodStats) *statsv1alpha1.Summary {
	return &statsv1alpha1.Summary{
		Node: statsv1alpha1.NodeStats{NodeName: node, CPU: cpuAt(nano, t0), Memory: mem(ws)},
		Pods: pods,
	}
}

func k8sNode(name string, lbls map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

// cachedScraper serves the given summaries from a fresh cache; the fake
// clientset lists the nodes (and whatever other objects are given).
func cachedScraper(sums []*statsv1alpha1.Summary, objs ...*corev1.Node) (*scraper, *fake.Clientset) {
	cs := fake.NewClientset()
	for _, n := range objs {
		if err := cs.Tracker().Add(n); err != nil {
			panic(err)
		}
	}
	s := &scraper{client: func() kubernetes.Interface { return cs }, cache: map[string]cached{}}
	for _, sum := range sums {
		s.cache[sum.Node.NodeName] = cached{at: time.Now(), summary: sum}
	}
	return s, cs
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name    string
		cpu     *statsv1alpha1.CPUStats
		mem     *statsv1alpha1.MemoryStats
		ok      bool
		wantCPU string
		wantMem string
	}{
		{name: "nil cpu", mem: mem(1)},
		{name: "nil memory", cpu: cpuAt(1, t0)},
		{name: "both nil"},
		{name: "no nanocores", cpu: &statsv1alpha1.CPUStats{Time: metav1.NewTime(t0)}, mem: mem(1)},
		{name: "no working set", cpu: cpuAt(1, t0), mem: &statsv1alpha1.MemoryStats{}},
		{name: "1.5 millicores", cpu: cpuAt(1500000, t0), mem: mem(1 << 20), ok: true, wantCPU: "1.5m", wantMem: "1Mi"},
		{name: "two cores", cpu: cpuAt(2_000_000_000, t0), mem: mem(3 << 30), ok: true, wantCPU: "2", wantMem: "3Gi"},
		{name: "zero", cpu: cpuAt(0, t0), mem: mem(0), ok: true, wantCPU: "0", wantMem: "0"},
		{name: "one nanocore", cpu: cpuAt(1, t0), mem: mem(1000), ok: true, wantCPU: "1n", wantMem: "1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ts, ok := usage(tt.cpu, tt.mem)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				if u != nil || !ts.IsZero() {
					t.Errorf("got %v %v with ok=false", u, ts)
				}
				return
			}
			if !ts.Equal(t0) {
				t.Errorf("timestamp = %v, want %v", ts, t0)
			}
			c, m := u[corev1.ResourceCPU], u[corev1.ResourceMemory]
			if c.Cmp(resource.MustParse(tt.wantCPU)) != 0 {
				t.Errorf("cpu = %s, want %s", c.String(), tt.wantCPU)
			}
			if m.Cmp(resource.MustParse(tt.wantMem)) != 0 {
				t.Errorf("memory = %s, want %s", m.String(), tt.wantMem)
			}
			if len(u) != 2 {
				t.Errorf("usage has %d resources: %v", len(u), u)
			}
		})
	}
}

func TestUsageCPUIsNanoScaled(t *testing.T) {
	u, _, ok := usage(cpuAt(1500000, t0), mem(1))
	if !ok {
		t.Fatal("not ok")
	}
	c := u[corev1.ResourceCPU]
	if got := c.MilliValue(); got != 2 { // 1.5m rounds up
		t.Errorf("MilliValue = %d", got)
	}
	if got := c.ScaledValue(resource.Nano); got != 1500000 {
		t.Errorf("nano value = %d", got)
	}
	// Canonical form of 1500000n (== 1.5m) is 1500u.
	if s := c.String(); s != "1500u" {
		t.Errorf("String = %q, want 1500u", s)
	}
	if c.Cmp(resource.MustParse("1500000n")) != 0 || c.Cmp(resource.MustParse("1.5m")) != 0 {
		t.Errorf("%s != 1500000n / 1.5m", c.String())
	}
	if c.Format != resource.DecimalSI {
		t.Errorf("format = %q", c.Format)
	}
	m := u[corev1.ResourceMemory]
	if m.Format != resource.BinarySI {
		t.Errorf("memory format = %q", m.Format)
	}
}

func TestNameMatches(t *testing.T) {
	tests := []struct {
		name string
		opts *metainternalversion.ListOptions
		obj  string
		want bool
	}{
		{"nil options", nil, "a", true},
		{"no field selector", &metainternalversion.ListOptions{}, "a", true},
		{"everything", &metainternalversion.ListOptions{FieldSelector: fields.Everything()}, "a", true},
		{"name equals", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "a")}, "a", true},
		{"name differs", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "a")}, "b", false},
		{"not equal", &metainternalversion.ListOptions{FieldSelector: fields.OneTermNotEqualSelector("metadata.name", "a")}, "b", true},
		{"not equal same", &metainternalversion.ListOptions{FieldSelector: fields.OneTermNotEqualSelector("metadata.name", "a")}, "a", false},
		{"unknown field", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "a")}, "a", false},
		{"conjunction", &metainternalversion.ListOptions{FieldSelector: fields.ParseSelectorOrDie("metadata.name=a,metadata.name!=b")}, "a", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nameMatches(tt.opts, tt.obj); got != tt.want {
				t.Errorf("nameMatches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFieldSet(t *testing.T) {
	f := fieldSet{"metadata.name": "x"}
	if !f.Has("metadata.name") || f.Has("other") || f.Get("metadata.name") != "x" || f.Get("other") != "" {
		t.Errorf("fieldSet misbehaves: %v", f)
	}
}

func TestSelectorOf(t *testing.T) {
	sel := labels.SelectorFromSet(labels.Set{"app": "web"})
	tests := []struct {
		name      string
		opts      *metainternalversion.ListOptions
		wantEmpty bool
		matches   labels.Set
	}{
		{"nil options", nil, true, labels.Set{"x": "y"}},
		{"nil selector", &metainternalversion.ListOptions{}, true, labels.Set{}},
		{"selector", &metainternalversion.ListOptions{LabelSelector: sel}, false, labels.Set{"app": "web", "x": "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := selectorOf(tt.opts)
			if got == nil {
				t.Fatal("nil selector")
			}
			if got.Empty() != tt.wantEmpty {
				t.Errorf("Empty = %v", got.Empty())
			}
			if !got.Matches(tt.matches) {
				t.Errorf("selector %q does not match %v", got, tt.matches)
			}
		})
	}
	if s := selectorOf(&metainternalversion.ListOptions{LabelSelector: sel}); s.Matches(labels.Set{"app": "db"}) {
		t.Error("selector matches the wrong labels")
	}
}

func nodeNames(l *metrics.NodeMetricsList) []string {
	var out []string
	for _, m := range l.Items {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

func TestNodeStorage(t *testing.T) {
	noMem := summary("n3", 1, 1)
	noMem.Node.Memory = nil
	src, cs := cachedScraper(
		[]*statsv1alpha1.Summary{summary("n1", 250_000_000, 1<<30), summary("n2", 1_000_000_000, 2<<30), noMem},
		k8sNode("n1", map[string]string{"role": "cp"}), k8sNode("n2", map[string]string{"role": "worker"}), k8sNode("n3", nil),
	)
	s := &nodeStorage{src: src}
	ctx := context.Background()

	obj, err := s.Get(ctx, "n1", &metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := obj.(*metrics.NodeMetrics)
	if m.Name != "n1" || !m.Timestamp.Time.Equal(t0) || m.Window.Duration != 10*time.Second {
		t.Errorf("node metrics = %+v", m)
	}
	if c := m.Usage[corev1.ResourceCPU]; c.Cmp(resource.MustParse("250m")) != 0 {
		t.Errorf("cpu = %s", c.String())
	}
	if c := m.Usage[corev1.ResourceMemory]; c.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("memory = %s", c.String())
	}
	if m.CreationTimestamp.IsZero() {
		t.Error("no creation timestamp")
	}

	for _, name := range []string{"n3", "unknown"} { // n3 has no memory stats
		if _, err := s.Get(ctx, name, &metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get(%s) err = %v, want NotFound", name, err)
		} else if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Details.Group != metrics.GroupName {
			t.Errorf("Get(%s) error details = %+v", name, err)
		}
	}

	tests := []struct {
		name string
		opts *metainternalversion.ListOptions
		want []string
	}{
		{"nil options", nil, []string{"n1", "n2"}},
		{"empty options", &metainternalversion.ListOptions{}, []string{"n1", "n2"}},
		{"field selector", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "n2")}, []string{"n2"}},
		{"label selector", &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"role": "cp"})}, []string{"n1"}},
		{"label selector none", &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"role": "gpu"})}, nil},
		{"label and field", &metainternalversion.ListOptions{
			LabelSelector: labels.SelectorFromSet(labels.Set{"role": "cp"}),
			FieldSelector: fields.OneTermEqualSelector("metadata.name", "n2"),
		}, nil},
		{"label exists", &metainternalversion.ListOptions{LabelSelector: labels.NewSelector().Add(existsReq(t, "role"))}, []string{"n1", "n2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(cs.Actions())
			obj, err := s.List(ctx, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := nodeNames(obj.(*metrics.NodeMetricsList)); !slices.Equal(got, tt.want) {
				t.Errorf("names = %v, want %v", got, tt.want)
			}
			for _, a := range cs.Actions()[before:] {
				if a.GetVerb() != "list" || a.GetResource().Resource != "nodes" {
					t.Errorf("unexpected API call %s %s", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
}

func existsReq(t *testing.T, key string) labels.Requirement {
	t.Helper()
	r, err := labels.NewRequirement(key, selection.Exists, nil)
	if err != nil {
		t.Fatal(err)
	}
	return *r
}

func TestStorageWithoutClient(t *testing.T) {
	ctx := context.Background()
	sel := &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"a": "b"})}
	for name, client := range map[string]func() kubernetes.Interface{
		"client returns nil": func() kubernetes.Interface { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			src := &scraper{client: client, cache: map[string]cached{"n1": {at: time.Now(), summary: summary("n1", 1, 1)}}}
			ns, ps := &nodeStorage{src: src}, &podStorage{src: src}
			for _, opts := range []*metainternalversion.ListOptions{nil, sel} {
				l, err := ns.List(ctx, opts)
				if err != nil || len(l.(*metrics.NodeMetricsList).Items) != 0 {
					t.Errorf("node list = %v, %v", l, err)
				}
				pl, err := ps.List(ctx, opts)
				if err != nil || len(pl.(*metrics.PodMetricsList).Items) != 0 {
					t.Errorf("pod list = %v, %v", pl, err)
				}
			}
			if _, err := ns.Get(ctx, "n1", nil); !apierrors.IsNotFound(err) {
				t.Errorf("node get err = %v", err)
			}
			if _, err := ps.Get(ctx, "p", nil); !apierrors.IsNotFound(err) {
				t.Errorf("pod get err = %v", err)
			}
		})
	}
	// A nil client func: summaries and nodeLabels guard it.
	src := &scraper{cache: map[string]cached{}}
	if got := src.summaries(ctx); got != nil {
		t.Errorf("summaries = %v", got)
	}
	if l, err := (&nodeStorage{src: src}).List(ctx, sel); err != nil || len(l.(*metrics.NodeMetricsList).Items) != 0 {
		t.Errorf("node list = %v, %v", l, err)
	}
}

func podKeys(l []metrics.PodMetrics) []string {
	var out []string
	for _, m := range l {
		out = append(out, m.Namespace+"/"+m.Name)
	}
	slices.Sort(out)
	return out
}

func TestPodStorage(t *testing.T) {
	t1 := t0.Add(5 * time.Second)
	incomplete := pod("ns1", "half", ctr("a", 1, 1, t0), statsv1alpha1.ContainerStats{Name: "b", CPU: cpuAt(1, t0)})
	src, cs := cachedScraper([]*statsv1alpha1.Summary{
		summary("n1", 1, 1,
			pod("ns1", "web", ctr("app", 100_000_000, 100<<20, t0), ctr("sidecar", 5_000_000, 10<<20, t1)),
			pod("ns2", "web", ctr("app", 1, 1, t0)),
			incomplete,
			pod("ns1", "empty"),
		),
		summary("n2", 1, 1, pod("ns2", "db", ctr("pg", 1, 1, t0))),
	}, k8sNode("n1", nil), k8sNode("n2", nil))
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "web", Labels: map[string]string{"app": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns2", Name: "web", Labels: map[string]string{"app": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns2", Name: "db", Labels: map[string]string{"app": "db"}}},
	} {
		if err := cs.Tracker().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	s := &podStorage{src: src}
	bg := context.Background()
	ns1 := genericapirequest.WithNamespace(bg, "ns1")
	ns2 := genericapirequest.WithNamespace(bg, "ns2")

	t.Run("get", func(t *testing.T) {
		obj, err := s.Get(ns1, "web", &metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := obj.(*metrics.PodMetrics)
		if m.Namespace != "ns1" || m.Name != "web" || m.Window.Duration != 10*time.Second {
			t.Errorf("pod metrics = %+v", m)
		}
		if !m.Timestamp.Time.Equal(t1) {
			t.Errorf("timestamp = %v, want latest container's %v", m.Timestamp, t1)
		}
		if len(m.Containers) != 2 || m.Containers[0].Name != "app" || m.Containers[1].Name != "sidecar" {
			t.Fatalf("containers = %+v", m.Containers)
		}
		if c := m.Containers[0].Usage[corev1.ResourceCPU]; c.Cmp(resource.MustParse("100m")) != 0 {
			t.Errorf("cpu = %s", c.String())
		}
		if c := m.Containers[1].Usage[corev1.ResourceMemory]; c.Cmp(resource.MustParse("10Mi")) != 0 {
			t.Errorf("memory = %s", c.String())
		}

		obj, err = s.Get(ns2, "web", &metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m := obj.(*metrics.PodMetrics); m.Namespace != "ns2" || len(m.Containers) != 1 {
			t.Errorf("ns2/web = %+v", m)
		}
	})

	t.Run("get not found", func(t *testing.T) {
		for _, c := range []struct {
			ctx  context.Context
			name string
		}{
			{ns1, "half"},    // a container lacks stats
			{ns1, "empty"},   // no containers
			{ns1, "db"},      // other namespace
			{ns2, "missing"}, // unknown
		} {
			if _, err := s.Get(c.ctx, c.name, &metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("Get(%s/%s) err = %v, want NotFound", genericapirequest.NamespaceValue(c.ctx), c.name, err)
			}
		}
	})

	tests := []struct {
		name string
		ctx  context.Context
		opts *metainternalversion.ListOptions
		want []string
	}{
		{"all namespaces", bg, nil, []string{"ns1/web", "ns2/db", "ns2/web"}},
		{"ns1", ns1, nil, []string{"ns1/web"}},
		{"ns2", ns2, &metainternalversion.ListOptions{}, []string{"ns2/db", "ns2/web"}},
		{"other namespace", genericapirequest.WithNamespace(bg, "ns3"), nil, nil},
		{"field selector", bg, &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web")}, []string{"ns1/web", "ns2/web"}},
		{"label selector", bg, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "web"})}, []string{"ns1/web", "ns2/web"}},
		{"label selector in namespace", ns2, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "web"})}, []string{"ns2/web"}},
		{"label selector none", bg, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "cache"})}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := s.List(tt.ctx, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := podKeys(obj.(*metrics.PodMetricsList).Items); !slices.Equal(got, tt.want) {
				t.Errorf("pods = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStorageMeta(t *testing.T) {
	ns, ps := &nodeStorage{}, &podStorage{}
	if _, ok := ns.New().(*metrics.NodeMetrics); !ok {
		t.Error("nodeStorage.New")
	}
	if _, ok := ns.NewList().(*metrics.NodeMetricsList); !ok {
		t.Error("nodeStorage.NewList")
	}
	if _, ok := ps.New().(*metrics.PodMetrics); !ok {
		t.Error("podStorage.New")
	}
	if _, ok := ps.NewList().(*metrics.PodMetricsList); !ok {
		t.Error("podStorage.NewList")
	}
	if ns.NamespaceScoped() || !ps.NamespaceScoped() {
		t.Error("scope")
	}
	if ns.GetSingularName() != "node" || ps.GetSingularName() != "pod" {
		t.Error("singular names")
	}
	ns.Destroy()
	ps.Destroy()

	ctx := context.Background()
	tbl, err := ns.ConvertToTable(ctx, &metrics.NodeMetricsList{Items: []metrics.NodeMetrics{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}}}, nil)
	if err != nil || len(tbl.Rows) != 1 {
		t.Errorf("node table = %+v, %v", tbl, err)
	}
	tbl, err = ps.ConvertToTable(ctx, &metrics.PodMetrics{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "x"}}, nil)
	if err != nil || len(tbl.Rows) != 1 {
		t.Errorf("pod table = %+v, %v", tbl, err)
	}
}

// kubeletClientset is a fake clientset whose CoreV1().RESTClient() reaches
// a test server standing in for the API server's node proxy.
type kubeletClientset struct {
	*fake.Clientset
	rc rest.Interface
}

type kubeletCore struct {
	corev1client.CoreV1Interface
	rc rest.Interface
}

func (c kubeletClientset) CoreV1() corev1client.CoreV1Interface {
	return kubeletCore{c.Clientset.CoreV1(), c.rc}
}
func (c kubeletCore) RESTClient() rest.Interface { return c.rc }

func TestScraperFetchesAndCaches(t *testing.T) {
	var hits atomic.Int32
	var badQuery atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("only_cpu_and_memory") != "true" {
			badQuery.Store(r.URL.String())
		}
		switch r.URL.Path {
		case "/api/v1/nodes/n1/proxy/stats/summary":
			hits.Add(1)
			_ = json.NewEncoder(w).Encode(summary("n1", 42, 4096))
		case "/api/v1/nodes/bad/proxy/stats/summary":
			_, _ = w.Write([]byte("{not json"))
		default: // "down" and anything else
			http.Error(w, "no", http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	real, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubeletClientset{Clientset: fake.NewClientset(k8sNode("n1", nil), k8sNode("down", nil), k8sNode("bad", nil)), rc: real.CoreV1().RESTClient()}
	s := &scraper{client: func() kubernetes.Interface { return cs }, cache: map[string]cached{}}
	ctx := context.Background()

	got := s.summaries(ctx)
	if len(got) != 1 || got[0].Node.NodeName != "n1" || *got[0].Node.CPU.UsageNanoCores != 42 {
		t.Fatalf("summaries = %+v", got)
	}
	if q := badQuery.Load(); q != nil {
		t.Errorf("request without only_cpu_and_memory=true: %v", q)
	}
	if hits.Load() != 1 {
		t.Fatalf("hits = %d", hits.Load())
	}
	if _, ok := s.cache["down"]; ok {
		t.Error("failed scrape cached")
	}
	if _, ok := s.cache["bad"]; ok {
		t.Error("undecodable scrape cached")
	}

	// Fresh: served from cache.
	if got := s.summaries(ctx); len(got) != 1 || hits.Load() != 1 {
		t.Fatalf("second call: %d summaries, %d hits", len(got), hits.Load())
	}

	// Stale: fetched again.
	s.mu.Lock()
	s.cache["n1"] = cached{at: time.Now().Add(-CacheTTL - time.Second), summary: summary("n1", 1, 1)}
	s.mu.Unlock()
	got = s.summaries(ctx)
	if len(got) != 1 || hits.Load() != 2 || *got[0].Node.CPU.UsageNanoCores != 42 {
		t.Fatalf("stale: %+v, %d hits", got, hits.Load())
	}

	// Served end to end through the storage.
	obj, err := (&nodeStorage{src: s}).Get(ctx, "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := obj.(*metrics.NodeMetrics).Usage[corev1.ResourceCPU]; c.Cmp(resource.MustParse("42n")) != 0 {
		t.Errorf("cpu = %s", c.String())
	}
}

func TestSummariesNodeListError(t *testing.T) {
	cs := fake.NewClientset(k8sNode("n1", nil))
	cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	s := &scraper{client: func() kubernetes.Interface { return cs }, cache: map[string]cached{
		"n1": {at: time.Now(), summary: summary("n1", 1, 1)},
	}}
	if got := s.summaries(context.Background()); got != nil {
		t.Errorf("summaries = %v, want nil", got)
	}
}
