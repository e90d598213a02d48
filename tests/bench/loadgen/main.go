// Command loadgen is Skiff's API load generator for `make bench`: C
// concurrent client-go clients create N ConfigMaps in a fresh namespace while
// a watcher records when each create is seen; then the N objects are listed.
// It prints one JSON line of results. It works against any Kubernetes API,
// so the same binary measures Skiff and the upstream baseline.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type result struct {
	Label        string  `json:"label"`
	Objects      int     `json:"objects"`
	Clients      int     `json:"clients"`
	CreatesPerS  float64 `json:"creates_per_s"`
	CreateP50ms  float64 `json:"create_p50_ms"`
	CreateP99ms  float64 `json:"create_p99_ms"`
	WatchP50ms   float64 `json:"watch_seen_p50_ms"`
	WatchP99ms   float64 `json:"watch_seen_p99_ms"`
	ListMs       float64 `json:"list_ms"`
	ListedItems  int     `json:"listed_items"`
	WatchMissing int     `json:"watch_missing"`
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
	n := flag.Int("n", 3000, "ConfigMaps to create")
	c := flag.Int("c", 16, "concurrent clients")
	label := flag.String("label", "", "label for the result line")
	flag.Parse()
	if err := run(*kubeconfig, *n, *c, *label); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, n, c int, label string) error {
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
	w, err := admin.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	defer w.Stop()
	seenLat := make([]time.Duration, 0, n)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			if t0, ok := created.Load(cm.Name); ok {
				seenLat = append(seenLat, time.Since(t0.(time.Time)))
				if len(seenLat) == n {
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
	var next atomic.Int64
	lat := make([][]time.Duration, c)
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
				name := fmt.Sprintf("cm-%06d", k)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"key": "value-" + name}}
				t0 := time.Now()
				created.Store(name, t0)
				if _, err := clients[i].CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return err
	default:
	}
	select {
	case <-watchDone:
	case <-time.After(30 * time.Second):
	}
	w.Stop()
	<-watchDone

	t0 := time.Now()
	list, err := admin.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	listDur := time.Since(t0)

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r := result{
		Label: label, Objects: n, Clients: c,
		CreatesPerS: float64(n) / elapsed.Seconds(),
		CreateP50ms: percentile(all, 0.50), CreateP99ms: percentile(all, 0.99),
		WatchP50ms: percentile(seenLat, 0.50), WatchP99ms: percentile(seenLat, 0.99),
		ListMs: float64(listDur.Microseconds()) / 1000, ListedItems: len(list.Items),
		WatchMissing: n - len(seenLat),
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}
