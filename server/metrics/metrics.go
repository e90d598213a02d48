// Package metrics serves the resource metrics API (metrics.k8s.io/v1beta1:
// NodeMetrics and PodMetrics, what `kubectl top` and the
// HorizontalPodAutoscaler read) from inside the API server, without a
// metrics-server pod: a request reads the kubelets' summary API
// (/stats/summary, computed from the nodes' cgroup statistics by the
// kubelet's cAdvisor) through the API server's node proxy, with a short
// cache so bursts of requests cost one scrape per node.
//
// The group is installed into the kube-apiserver as a built-in API group
// (genericapiserver.InstallAPIGroup), so authentication, RBAC
// (system:aggregated-metrics-reader), discovery and OpenAPI work as for
// any other group.
package metrics

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/metrics/pkg/apis/metrics"
	"k8s.io/metrics/pkg/apis/metrics/install"
	"k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// CacheTTL is how long one node's summary answers requests.
const CacheTTL = 10 * time.Second

// Install adds metrics.k8s.io to s. client is called per request (nil
// until the server can reach itself; requests then answer empty lists).
func Install(s *genericapiserver.GenericAPIServer, client func() kubernetes.Interface) error {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	unversioned := []runtime.Object{&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{}}
	scheme.AddUnversionedTypes(schema.GroupVersion{Group: "", Version: "v1"}, unversioned...)
	codecs := serializer.NewCodecFactory(scheme)
	src := &scraper{client: client, cache: map[string]cached{}}
	info := genericapiserver.NewDefaultAPIGroupInfo(metrics.GroupName, scheme, runtime.NewParameterCodec(scheme), codecs)
	info.VersionedResourcesStorageMap[v1beta1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"nodes": &nodeStorage{src: src},
		"pods":  &podStorage{src: src},
	}
	return s.InstallAPIGroup(&info)
}

type cached struct {
	at      time.Time
	summary *statsv1alpha1.Summary
}

// scraper fetches and caches kubelet summaries.
type scraper struct {
	client func() kubernetes.Interface
	mu     sync.Mutex
	cache  map[string]cached
}

// clientset is the API client, or nil while there is none.
func (s *scraper) clientset() kubernetes.Interface {
	if s.client == nil {
		return nil
	}
	return s.client()
}

// summaries returns the current summary of every node that answers.
func (s *scraper) summaries(ctx context.Context) []*statsv1alpha1.Summary {
	var cs kubernetes.Interface
	if s.client != nil {
		cs = s.client()
	}
	if cs == nil {
		return nil
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	out := make([]*statsv1alpha1.Summary, len(nodes.Items))
	var wg sync.WaitGroup
	for i, n := range nodes.Items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.summary(ctx, cs, n.Name)
		}()
	}
	wg.Wait()
	res := out[:0]
	for _, x := range out {
		if x != nil {
			res = append(res, x)
		}
	}
	return res
}

func (s *scraper) summary(ctx context.Context, cs kubernetes.Interface, node string) *statsv1alpha1.Summary {
	s.mu.Lock()
	c, ok := s.cache[node]
	s.mu.Unlock()
	if ok && time.Since(c.at) < CacheTTL {
		return c.summary
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := cs.CoreV1().RESTClient().Get().Resource("nodes").Name(node).SubResource("proxy").Suffix("stats/summary").
		Param("only_cpu_and_memory", "true").DoRaw(ctx)
	if err != nil {
		return nil
	}
	var sum statsv1alpha1.Summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		return nil
	}
	s.mu.Lock()
	s.cache[node] = cached{at: time.Now(), summary: &sum}
	s.mu.Unlock()
	return &sum
}

func usage(cpu *statsv1alpha1.CPUStats, mem *statsv1alpha1.MemoryStats) (corev1.ResourceList, time.Time, bool) {
	if cpu == nil || mem == nil || cpu.UsageNanoCores == nil || mem.WorkingSetBytes == nil {
		return nil, time.Time{}, false
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewScaledQuantity(int64(*cpu.UsageNanoCores), -9),
		corev1.ResourceMemory: *resource.NewQuantity(int64(*mem.WorkingSetBytes), resource.BinarySI),
	}, cpu.Time.Time, true
}

// window is the interval cAdvisor's CPU rate covers.
var window = metav1.Duration{Duration: 10 * time.Second}

func selectorOf(options *metainternalversion.ListOptions) labels.Selector {
	if options == nil || options.LabelSelector == nil {
		return labels.Everything()
	}
	return options.LabelSelector
}

func nameMatches(options *metainternalversion.ListOptions, name string) bool {
	if options == nil || options.FieldSelector == nil || options.FieldSelector.Empty() {
		return true
	}
	return options.FieldSelector.Matches(fieldSet{"metadata.name": name})
}

type fieldSet map[string]string

func (f fieldSet) Has(k string) bool   { _, ok := f[k]; return ok }
func (f fieldSet) Get(k string) string { return f[k] }

type nodeStorage struct {
	src *scraper
}

var (
	_ rest.Storage              = &nodeStorage{}
	_ rest.Getter               = &nodeStorage{}
	_ rest.Lister               = &nodeStorage{}
	_ rest.Scoper               = &nodeStorage{}
	_ rest.SingularNameProvider = &nodeStorage{}
)

func (s *nodeStorage) New() runtime.Object     { return &metrics.NodeMetrics{} }
func (s *nodeStorage) Destroy()                {}
func (s *nodeStorage) NewList() runtime.Object { return &metrics.NodeMetricsList{} }
func (s *nodeStorage) NamespaceScoped() bool   { return false }
func (s *nodeStorage) GetSingularName() string { return "node" }
func (s *nodeStorage) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return rest.NewDefaultTableConvertor(metrics.Resource("nodemetrics")).ConvertToTable(ctx, obj, opts)
}

func (s *nodeStorage) nodeMetrics(ctx context.Context) []metrics.NodeMetrics {
	var out []metrics.NodeMetrics
	for _, sum := range s.src.summaries(ctx) {
		u, ts, ok := usage(sum.Node.CPU, sum.Node.Memory)
		if !ok {
			continue
		}
		out = append(out, metrics.NodeMetrics{
			ObjectMeta: metav1.ObjectMeta{Name: sum.Node.NodeName, CreationTimestamp: metav1.NewTime(time.Now())},
			Timestamp:  metav1.NewTime(ts), Window: window, Usage: u,
		})
	}
	return out
}

func (s *nodeStorage) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	for _, m := range s.nodeMetrics(ctx) {
		if m.Name == name {
			return &m, nil
		}
	}
	return nil, notFound(metrics.Resource("nodes"), name)
}

func (s *nodeStorage) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	list := &metrics.NodeMetricsList{}
	sel := selectorOf(options)
	var labelsOf map[string]labels.Set
	if !sel.Empty() {
		labelsOf = s.nodeLabels(ctx)
	}
	for _, m := range s.nodeMetrics(ctx) {
		if !nameMatches(options, m.Name) || (!sel.Empty() && !sel.Matches(labelsOf[m.Name])) {
			continue
		}
		list.Items = append(list.Items, m)
	}
	return list, nil
}

func (s *nodeStorage) nodeLabels(ctx context.Context) map[string]labels.Set {
	out := map[string]labels.Set{}
	if s.src.client == nil || s.src.client() == nil {
		return out
	}
	nodes, err := s.src.client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return out
	}
	for _, n := range nodes.Items {
		out[n.Name] = n.Labels
	}
	return out
}

type podStorage struct {
	src *scraper
}

var (
	_ rest.Storage              = &podStorage{}
	_ rest.Getter               = &podStorage{}
	_ rest.Lister               = &podStorage{}
	_ rest.Scoper               = &podStorage{}
	_ rest.SingularNameProvider = &podStorage{}
)

func (s *podStorage) New() runtime.Object     { return &metrics.PodMetrics{} }
func (s *podStorage) Destroy()                {}
func (s *podStorage) NewList() runtime.Object { return &metrics.PodMetricsList{} }
func (s *podStorage) NamespaceScoped() bool   { return true }
func (s *podStorage) GetSingularName() string { return "pod" }
func (s *podStorage) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return rest.NewDefaultTableConvertor(metrics.Resource("podmetrics")).ConvertToTable(ctx, obj, opts)
}

func (s *podStorage) podMetrics(ctx context.Context, ns string) []metrics.PodMetrics {
	var out []metrics.PodMetrics
	for _, sum := range s.src.summaries(ctx) {
		for _, p := range sum.Pods {
			if ns != "" && p.PodRef.Namespace != ns {
				continue
			}
			pm := metrics.PodMetrics{
				ObjectMeta: metav1.ObjectMeta{Name: p.PodRef.Name, Namespace: p.PodRef.Namespace, CreationTimestamp: metav1.NewTime(time.Now())},
				Window:     window,
			}
			complete := len(p.Containers) > 0
			for _, c := range p.Containers {
				u, ts, ok := usage(c.CPU, c.Memory)
				if !ok {
					complete = false
					break
				}
				if ts.After(pm.Timestamp.Time) {
					pm.Timestamp = metav1.NewTime(ts)
				}
				pm.Containers = append(pm.Containers, metrics.ContainerMetrics{Name: c.Name, Usage: u})
			}
			if complete {
				out = append(out, pm)
			}
		}
	}
	return out
}

func (s *podStorage) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	for _, m := range s.podMetrics(ctx, ns) {
		if m.Name == name {
			return &m, nil
		}
	}
	return nil, notFound(metrics.Resource("pods"), name)
}

func (s *podStorage) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	list := &metrics.PodMetricsList{}
	sel := selectorOf(options)
	var podLabels map[string]labels.Set
	if !sel.Empty() {
		podLabels = map[string]labels.Set{}
		if cs := s.src.clientset(); cs != nil {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err == nil {
				for _, p := range pods.Items {
					podLabels[p.Namespace+"/"+p.Name] = p.Labels
				}
			}
		}
	}
	for _, m := range s.podMetrics(ctx, ns) {
		if !nameMatches(options, m.Name) {
			continue
		}
		if !sel.Empty() {
			if _, ok := podLabels[m.Namespace+"/"+m.Name]; !ok {
				continue
			}
		}
		list.Items = append(list.Items, m)
	}
	return list, nil
}

func notFound(gr schema.GroupResource, name string) error {
	return apierrors.NewNotFound(gr, name)
}
