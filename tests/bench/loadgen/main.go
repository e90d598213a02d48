// Command loadgen is Skiff's API load generator for `make bench`. In the
// default "create" mode, C concurrent client-go clients create N ConfigMaps
// in a fresh namespace while a watcher records when each create is seen;
// then the N objects are listed. In "ssa" mode the clients server-side
// apply N Deployments (creating them), then apply all N again with a
// changed image and replica count (updating them through the apply path);
// the watcher and the LIST work as in create mode. It prints one JSON line
// of results. It works against any Kubernetes API, so the same binary
// measures Skiff and the upstream baseline.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type result struct {
	Label   string `json:"label"`
	Mode    string `json:"mode"`
	Objects int    `json:"objects"`
	Clients int    `json:"clients"`
	// Creates (in ssa mode: the first apply of each object, which creates it).
	CreatesPerS float64 `json:"creates_per_s"`
	CreateP50ms float64 `json:"create_p50_ms"`
	CreateP99ms float64 `json:"create_p99_ms"`
	// ssa mode only: the second apply of each object, which changes it.
	UpdatesPerS  float64 `json:"updates_per_s,omitempty"`
	UpdateP50ms  float64 `json:"update_p50_ms,omitempty"`
	UpdateP99ms  float64 `json:"update_p99_ms,omitempty"`
	WatchP50ms   float64 `json:"watch_seen_p50_ms"`
	WatchP99ms   float64 `json:"watch_seen_p99_ms"`
	ListMs       float64 `json:"list_ms"`
	ListedItems  int     `json:"listed_items"`
	WatchMissing int     `json:"watch_missing"`
	WatchEnd     string  `json:"watch_end,omitempty"`
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API to load")
	mode := flag.String("mode", "create", `"create" (ConfigMaps) or "ssa" (server-side apply of Deployments)`)
	n := flag.Int("n", 3000, "objects to create")
	c := flag.Int("c", 16, "concurrent clients")
	label := flag.String("label", "", "label for the result line")
	trace := flag.String("trace", "", "file to write each create's start (µs from the first) and latency (µs) to, one per line, in start order")
	flag.Parse()
	if *mode != "create" && *mode != "ssa" {
		fmt.Fprintf(os.Stderr, "loadgen: unknown -mode %q\n", *mode)
		os.Exit(2)
	}
	if err := run(*kubeconfig, *mode, *n, *c, *label, *trace); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// sample is one operation: when it started (since the first) and how long
// it took.
type sample struct{ start, lat time.Duration }

// writeTrace writes samples in start order, in µs, one per line.
func writeTrace(path string, samples []sample) error {
	slices.SortFunc(samples, func(a, b sample) int { return int(a.start - b.start) })
	var b strings.Builder
	for _, s := range samples {
		fmt.Fprintf(&b, "%d %d\n", s.start.Microseconds(), s.lat.Microseconds())
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// latencies are the samples' latencies.
func latencies(samples []sample) []time.Duration {
	lat := make([]time.Duration, len(samples))
	for i, s := range samples {
		lat[i] = s.lat
	}
	return lat
}

// workers runs op for k = 0..n-1 on c concurrent workers and returns the
// elapsed time and the operations' samples.
func workers(c, n int, op func(worker, k int) error) (time.Duration, []sample, error) {
	var next atomic.Int64
	samples := make([][]sample, c)
	errs := make(chan error, c)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range c {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := op(i, int(k)); err != nil {
					errs <- err
					return
				}
				samples[i] = append(samples[i], sample{t0.Sub(start), time.Since(t0)})
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return 0, nil, err
	default:
	}
	return elapsed, slices.Concat(samples...), nil
}

// deployment is the apply configuration loadgen applies in ssa mode.
func deployment(name, ns, image string, replicas int32) *appsv1ac.DeploymentApplyConfiguration {
	labels := map[string]string{"app": name, "loadgen": "ssa"}
	return appsv1ac.Deployment(name, ns).
		WithLabels(labels).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{"app": name})).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(labels).
				WithSpec(corev1ac.PodSpec().WithContainers(corev1ac.Container().
					WithName("app").WithImage(image).
					WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(8080)).
					WithEnv(corev1ac.EnvVar().WithName("NAME").WithValue(name)).
					WithResources(corev1ac.ResourceRequirements().WithRequests(corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}))))))
}

func run(kubeconfig, mode string, n, c int, label, trace string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1e6, 1e6
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("loadgen-%d", time.Now().UnixNano())
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})

	var created sync.Map // name -> time the create was sent
	var w watch.Interface
	var nameOf func(runtime.Object) (string, bool)
	if mode == "ssa" {
		w, err = admin.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{})
		nameOf = func(obj runtime.Object) (string, bool) {
			d, ok := obj.(*appsv1.Deployment)
			if !ok {
				return "", false
			}
			return d.Name, true
		}
	} else {
		w, err = admin.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{})
		nameOf = func(obj runtime.Object) (string, bool) {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok {
				return "", false
			}
			return cm.Name, true
		}
	}
	if err != nil {
		return err
	}
	defer w.Stop()
	seenLat := make([]time.Duration, 0, n)
	watchDone := make(chan struct{})
	var watchEnd string // why the watch ended before seeing every object
	go func() {
		defer close(watchDone)
		watchEnd = "closed by the server"
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				watchEnd = fmt.Sprintf("error event: %v", apierrors.FromObject(ev.Object))
			}
			if ev.Type != watch.Added {
				continue
			}
			name, ok := nameOf(ev.Object)
			if !ok {
				continue
			}
			if t0, ok := created.Load(name); ok {
				seenLat = append(seenLat, time.Since(t0.(time.Time)))
				if len(seenLat) == n {
					watchEnd = ""
					return
				}
			}
		}
	}()

	// One client per worker, as separate processes would have.
	clients := make([]*kubernetes.Clientset, c)
	for i := range clients {
		if clients[i], err = kubernetes.NewForConfig(cfg); err != nil {
			return err
		}
	}
	r := result{Label: label, Mode: mode, Objects: n, Clients: c}
	var elapsed time.Duration
	var samples []sample
	if mode == "ssa" {
		applyOpts := metav1.ApplyOptions{FieldManager: "loadgen", Force: true}
		elapsed, samples, err = workers(c, n, func(i, k int) error {
			name := fmt.Sprintf("deploy-%06d", k)
			created.Store(name, time.Now())
			d, err := clients[i].AppsV1().Deployments(ns).Apply(ctx, deployment(name, ns, "registry.example/app:1", 1), applyOpts)
			if err == nil && d.Generation != 1 {
				err = fmt.Errorf("first apply of %s: generation %d, want 1", name, d.Generation)
			}
			return err
		})
		if err != nil {
			return err
		}
		upElapsed, upSamples, err := workers(c, n, func(i, k int) error {
			name := fmt.Sprintf("deploy-%06d", k)
			d, err := clients[i].AppsV1().Deployments(ns).Apply(ctx, deployment(name, ns, "registry.example/app:2", 2), applyOpts)
			if err == nil && (d.Generation != 2 || d.Spec.Template.Spec.Containers[0].Image != "registry.example/app:2") {
				err = fmt.Errorf("second apply of %s: generation %d image %s", name, d.Generation, d.Spec.Template.Spec.Containers[0].Image)
			}
			return err
		})
		if err != nil {
			return err
		}
		r.UpdatesPerS = float64(n) / upElapsed.Seconds()
		upLat := latencies(upSamples)
		r.UpdateP50ms, r.UpdateP99ms = percentile(upLat, 0.50), percentile(upLat, 0.99)
	} else {
		elapsed, samples, err = workers(c, n, func(i, k int) error {
			name := fmt.Sprintf("cm-%06d", k)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"key": "value-" + name}}
			created.Store(name, time.Now())
			_, err := clients[i].CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return err
		}
	}
	if trace != "" {
		if err := writeTrace(trace, samples); err != nil {
			return err
		}
	}
	select {
	case <-watchDone:
	case <-time.After(30 * time.Second):
		w.Stop()
		<-watchDone
		watchEnd = "not all seen 30 s after the last write"
	}
	w.Stop()

	t0 := time.Now()
	var listed int
	if mode == "ssa" {
		list, err := admin.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		listed = len(list.Items)
	} else {
		list, err := admin.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		listed = len(list.Items)
	}
	listDur := time.Since(t0)

	r.CreatesPerS = float64(n) / elapsed.Seconds()
	lat := latencies(samples)
	r.CreateP50ms, r.CreateP99ms = percentile(lat, 0.50), percentile(lat, 0.99)
	r.WatchP50ms, r.WatchP99ms = percentile(seenLat, 0.50), percentile(seenLat, 0.99)
	r.ListMs, r.ListedItems = float64(listDur.Microseconds())/1000, listed
	r.WatchMissing = n - len(seenLat)
	r.WatchEnd = watchEnd
	return json.NewEncoder(os.Stdout).Encode(r)
}
