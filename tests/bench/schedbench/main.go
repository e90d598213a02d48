// Command schedbench measures the control loops of a Kubernetes API (Skiff's
// in-process kube-scheduler and kube-controller-manager) against a fleet of
// simulated nodes (agent/nodesim) that it runs in-process. It prints one
// JSON line of results. Modes:
//
//   - throughput: -nodes N -pods P bare pods (small requests, a nodeSelector
//     on the fleet) created by -c concurrent clients; a watch records when
//     each pod gets spec.nodeName and when it is Running. Reports pods bound
//     per second from the first to the last bind and overall (first create
//     to last bind), and create → bound / create → Running percentiles.
//   - startup: pods created at a steady -rate for -duration on -nodes nodes,
//     each deleted -keep after its creation (churn); create → Running seen
//     by a watch, p50/p99.
//   - scale: -pods pods from Deployments of -replicas each on -nodes nodes;
//     the time until all are Running, the p50/p99 latency of every request
//     the tool itself sent meanwhile (simulated kubelets' lease, node and pod
//     status traffic, the Deployment creates and a probe's GET/create/delete),
//     then the time to LIST all pods (protobuf and JSON).
//
// Every mode also reports the latency of all non-watch requests the tool
// sent while measuring (by kind: write, get, list), non-2xx responses, the
// simulator's warnings, and deltas of the server's own /metrics over the
// measured phase: process CPU, GC cycles, the in-process scheduler's
// algorithm (filter + score), bind and pod SLI latencies, API server write
// and storage write latency. Server memory is read by scripts/bench.sh from
// /proc; schedbench reports its own CPU time, since it shares the host.
//
// Clients use protobuf and QPS/burst -qps/-burst (the tool and the simulator
// each have their own limiter). -heartbeat sets the simulated nodes' Lease
// renewal interval (kubelet: 10 s).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

const simName = "schedbench"

type result struct {
	Label string `json:"label"`
	Mode  string `json:"mode"`
	Nodes int    `json:"nodes"`
	Pods  int    `json:"pods"`
	// NodesReadyS: from starting the fleet until every node is Ready and
	// schedulable (not-ready taint removed by the node lifecycle controller).
	NodesReadyS float64 `json:"nodes_ready_s"`
	// NodesSchedulable when the measurement started (less than Nodes if
	// -ready-timeout passed first).
	NodesSchedulable int `json:"nodes_schedulable"`

	// Pod creation by the tool (throughput, startup).
	Clients     int     `json:"clients,omitempty"`
	Created     int     `json:"created,omitempty"`
	CreatesPerS float64 `json:"creates_per_s,omitempty"`
	CreateP50ms float64 `json:"create_p50_ms,omitempty"`
	CreateP99ms float64 `json:"create_p99_ms,omitempty"`

	// Scheduling (pods bound).
	Bound           int      `json:"bound"`
	BindWindowPerS  float64  `json:"bound_per_s_first_to_last,omitempty"`
	BindOverallPerS float64  `json:"bound_per_s_overall,omitempty"`
	Bind1sP50       float64  `json:"bound_per_s_1s_p50,omitempty"`
	Bind1sMax       float64  `json:"bound_per_s_1s_max,omitempty"`
	SeenP50ms       float64  `json:"create_to_seen_p50_ms,omitempty"` // the tool's watch: creation -> ADDED
	SeenP99ms       float64  `json:"create_to_seen_p99_ms,omitempty"`
	BoundP50ms      float64  `json:"create_to_bound_p50_ms"`
	BoundP99ms      float64  `json:"create_to_bound_p99_ms"`
	Running         int      `json:"running"`
	RunningP50ms    float64  `json:"create_to_running_p50_ms"`
	RunningP99ms    float64  `json:"create_to_running_p99_ms"`
	RunningMaxms    float64  `json:"create_to_running_max_ms"`
	BoundToRunP99ms float64  `json:"bound_to_running_p99_ms"`
	AllBoundS       float64  `json:"all_bound_s,omitempty"`
	AllRunningS     float64  `json:"all_running_s,omitempty"`
	RunningPerS     float64  `json:"running_per_s,omitempty"`
	NotRunning      int      `json:"not_running,omitempty"`
	Deleted         int      `json:"deleted,omitempty"`
	RatePerS        float64  `json:"rate_per_s,omitempty"`
	DurationS       float64  `json:"duration_s,omitempty"`
	Deployments     int      `json:"deployments,omitempty"`
	ListMs          float64  `json:"list_all_pods_ms,omitempty"`
	ListJSONMs      float64  `json:"list_all_pods_json_ms,omitempty"`
	Listed          int      `json:"listed_pods,omitempty"`
	API             apiStats `json:"api"`
	ToolCPUs        float64  `json:"tool_cpu_s"`
	WallS           float64  `json:"wall_s"`
	// Server is from the server's /metrics over the measured phase.
	Server *serverStats `json:"server,omitempty"`
	// SLO is the API call latency SLOs as upstream defines and measures
	// them: on the server's side, per (resource, verb) or (resource,
	// scope), p99 over 5 minutes (see slo.go).
	SLO *sloStats `json:"api_slo,omitempty"`
	// SimWarnings counts the node simulator's warnings by message.
	SimWarnings map[string]int `json:"sim_warnings,omitempty"`
	// Incomplete says what did not finish within -timeout; the figures
	// then cover what did.
	Incomplete string `json:"incomplete,omitempty"`
	Error      string `json:"error,omitempty"`
}

// apiStats: latency (to response headers) of the non-watch requests the
// tool sent during the measured phase, by kind.
type apiStats struct {
	Requests int     `json:"requests"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
	WriteP99 float64 `json:"write_p99_ms"`
	GetP99   float64 `json:"get_p99_ms"`
	ListP99  float64 `json:"list_p99_ms"`
	Errors   int     `json:"errors_5xx_429"`
	// Codes counts responses other than 2xx by status (409: conflicts).
	Codes map[string]int `json:"non_2xx,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return ms(s[int(float64(len(s)-1)*p)])
}

// recorder is a transport wrapper timing every non-watch request.
type recorder struct {
	on     atomic.Bool
	mu     sync.Mutex
	lat    map[string][]time.Duration // write, get, list
	errors int
	codes  map[int]int // responses other than 2xx by status code
}

type timedRT struct {
	r    *recorder
	next http.RoundTripper
}

func (t timedRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.r.on.Load() || req.URL.Query().Get("watch") == "true" {
		return t.next.RoundTrip(req)
	}
	t0 := time.Now()
	resp, err := t.next.RoundTrip(req)
	d := time.Since(t0)
	kind := "write"
	if req.Method == http.MethodGet {
		kind = "get"
		if isCollection(req.URL.Path) {
			kind = "list"
		}
	}
	t.r.mu.Lock()
	t.r.lat[kind] = append(t.r.lat[kind], d)
	if err == nil && resp.StatusCode/100 != 2 {
		if t.r.codes[resp.StatusCode]++; t.r.codes[resp.StatusCode] <= 3 {
			fmt.Fprintf(os.Stderr, "schedbench: %s %s: %s\n", req.Method, req.URL.Path, resp.Status)
		}
	}
	if errors.Is(err, context.Canceled) {
		// In flight when the run ended.
	} else if err != nil || resp.StatusCode >= 500 || resp.StatusCode == 429 {
		t.r.errors++
		if t.r.errors <= 5 {
			status := fmt.Sprint(err)
			if err == nil {
				status = resp.Status
			}
			fmt.Fprintf(os.Stderr, "schedbench: %s %s: %s after %s\n", req.Method, req.URL.Path, status, d.Round(time.Millisecond))
		}
	}
	t.r.mu.Unlock()
	return resp, err
}

// isCollection: /api/v1/[namespaces/NS/]RES or /apis/G/V/[namespaces/NS/]RES.
func isCollection(path string) bool {
	s := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(s) >= 2 && s[0] == "api":
		s = s[2:]
	case len(s) >= 3 && s[0] == "apis":
		s = s[3:]
	default:
		return false
	}
	if len(s) >= 3 && s[0] == "namespaces" {
		s = s[2:]
	}
	return len(s) == 1
}

func (r *recorder) stats() apiStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []time.Duration
	for _, l := range r.lat {
		all = append(all, l...)
	}
	st := apiStats{Requests: len(all), P50ms: percentile(all, 0.5), P99ms: percentile(all, 0.99),
		WriteP99: percentile(r.lat["write"], 0.99), GetP99: percentile(r.lat["get"], 0.99),
		ListP99: percentile(r.lat["list"], 0.99), Errors: r.errors}
	for code, n := range r.codes {
		if st.Codes == nil {
			st.Codes = map[string]int{}
		}
		st.Codes[strconv.Itoa(code)] = n
	}
	if len(all) > 0 {
		st.Maxms = ms(slices.Max(all))
	}
	return st
}

// podTimes is what the watch saw of one pod.
type podTimes struct {
	created, seen, bound, running time.Time
}

// tracker follows the pods of one namespace through a watch.
type tracker struct {
	mu      sync.Mutex
	pods    map[string]*podTimes
	bound   int
	running int
	changed chan struct{} // signalled (non-blocking) on every bind/run
}

func newTracker() *tracker {
	return &tracker{pods: map[string]*podTimes{}, changed: make(chan struct{}, 1)}
}

func (t *tracker) get(name string) *podTimes {
	p := t.pods[name]
	if p == nil {
		p = &podTimes{}
		t.pods[name] = p
	}
	return p
}

func (t *tracker) created(name string, at time.Time) {
	t.mu.Lock()
	t.get(name).created = at
	t.mu.Unlock()
}

func (t *tracker) observe(pod *v1.Pod, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(pod.Name)
	if p.seen.IsZero() {
		p.seen = now
	}
	signal := false
	if pod.Spec.NodeName != "" && p.bound.IsZero() {
		p.bound = now
		t.bound++
		signal = true
	}
	if pod.Status.Phase == v1.PodRunning && p.running.IsZero() {
		p.running = now
		t.running++
		signal = true
	}
	if signal {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

func (t *tracker) counts() (bound, running int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bound, t.running
}

// waitFor blocks until cond(bound, running) holds or the deadline passes.
func (t *tracker) waitFor(ctx context.Context, timeout time.Duration, cond func(bound, running int) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if cond(t.counts()) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return cond(t.counts())
		case <-t.changed:
		case <-tick.C:
		}
	}
}

type podWatcher struct {
	client kubernetes.Interface
	ns     string
}

func (w podWatcher) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return w.client.CoreV1().Pods(w.ns).Watch(ctx, o)
}

// watchPods feeds the tracker until ctx ends; it returns once watching.
func watchPods(ctx context.Context, client kubernetes.Interface, ns string, t *tracker) error {
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, podWatcher{client, ns})
	if err != nil {
		return err
	}
	go func() {
		defer rw.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-rw.ResultChan():
				if !ok {
					return
				}
				if p, ok := ev.Object.(*v1.Pod); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
					t.observe(p, time.Now())
				}
			}
		}
	}()
	return nil
}

func podSpec() v1.PodSpec {
	return v1.PodSpec{
		NodeSelector:                  map[string]string{nodesim.LabelManaged: simName},
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		Containers: []v1.Container{{
			Name: "app", Image: "registry.example/pause:3.10",
			Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
				v1.ResourceCPU: resource.MustParse("10m"), v1.ResourceMemory: resource.MustParse("16Mi")}},
		}},
	}
}

func pod(name string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "schedbench"}}, Spec: podSpec()}
}

// workers runs op(worker, k) for k in [0, n) on c goroutines; returns the
// elapsed time, per-op latencies and the first error.
func workers(c, n int, op func(k int) error) (time.Duration, []time.Duration, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, c)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range c {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(n) || firstErr.Load() != nil {
					return
				}
				t0 := time.Now()
				if err := op(int(k)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	err, _ := firstErr.Load().(error)
	return time.Since(start), all, err
}

// serverStats: deltas of the server's own metrics (kube-apiserver,
// in-process scheduler and Go runtime share one registry) over the
// measured phase; averages in ms.
type serverStats struct {
	CPUs             float64 `json:"process_cpu_s"`
	GCCycles         float64 `json:"gc_cycles"`
	SchedAttempts    float64 `json:"sched_attempts"`
	SchedAlgorithmMs float64 `json:"sched_algorithm_avg_ms"`
	SchedFilterMs    float64 `json:"sched_filter_avg_ms"`
	SchedScoreMs     float64 `json:"sched_score_avg_ms"`
	SchedBindMs      float64 `json:"sched_bind_avg_ms"`
	SchedSLIMs       float64 `json:"sched_pod_sli_avg_ms"`
	APIWriteMs       float64 `json:"apiserver_write_avg_ms"`
	APIWrites        float64 `json:"apiserver_writes"`
	StorageWriteMs   float64 `json:"storage_write_avg_ms"`
}

// metrics is one scrape of /metrics: series (name{labels}) -> value.
type metrics map[string]float64

func scrape(ctx context.Context, c kubernetes.Interface) metrics {
	raw, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedbench: /metrics:", err)
		return nil
	}
	m := metrics{}
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// sum adds the series of name whose labels contain every one of want.
func (m metrics) sum(name string, want ...string) float64 {
	var total float64
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		match := true
		for _, w := range want {
			if !strings.Contains(rest, w) {
				match = false
				break
			}
		}
		if match {
			total += v
		}
	}
	return total
}

func serverDelta(before, after metrics) *serverStats {
	if before == nil || after == nil {
		return nil
	}
	d := func(name string, want ...string) float64 { return after.sum(name, want...) - before.sum(name, want...) }
	avg := func(name string, want ...string) float64 {
		n := d(name+"_count", want...)
		if n == 0 {
			return 0
		}
		return 1000 * d(name+"_sum", want...) / n
	}
	ext := func(point string) float64 {
		return avg("scheduler_framework_extension_point_duration_seconds", `extension_point="`+point+`"`)
	}
	var writeSum, writeN float64
	for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		writeSum += d("apiserver_request_duration_seconds_sum", `verb="`+verb+`"`)
		writeN += d("apiserver_request_duration_seconds_count", `verb="`+verb+`"`)
	}
	var stSum, stN float64
	for _, op := range []string{"create", "update", "delete"} {
		stSum += d("etcd_request_duration_seconds_sum", `operation="`+op+`"`)
		stN += d("etcd_request_duration_seconds_count", `operation="`+op+`"`)
	}
	st := &serverStats{
		CPUs:             d("process_cpu_seconds_total"),
		GCCycles:         d("go_gc_duration_seconds_count"),
		SchedAttempts:    d("scheduler_schedule_attempts_total"),
		SchedAlgorithmMs: avg("scheduler_scheduling_algorithm_duration_seconds"),
		SchedFilterMs:    ext("Filter"),
		SchedScoreMs:     ext("Score"),
		SchedBindMs:      ext("Bind"),
		SchedSLIMs:       avg("scheduler_pod_scheduling_sli_duration_seconds"),
		APIWrites:        writeN,
	}
	if writeN > 0 {
		st.APIWriteMs = 1000 * writeSum / writeN
	}
	if stN > 0 {
		st.StorageWriteMs = 1000 * stSum / stN
	}
	return st
}

// leaseSafeClient works around a node simulator bug: client-go's typed
// Update returns a non-nil empty Lease along with any error, nodesim keeps
// it as the node's Lease unless the error is a conflict or not-found, and
// every later renewal of that node then fails ("resource name may not be
// empty") — one timed-out or reset renewal loses the node for good. Here a
// failed Lease update returns no object, so the simulator keeps its last
// good Lease and recovers through its conflict path.
type leaseSafeClient struct{ kubernetes.Interface }

func (c leaseSafeClient) CoordinationV1() coordinationv1client.CoordinationV1Interface {
	return leaseSafeCoordination{c.Interface.CoordinationV1()}
}

type leaseSafeCoordination struct {
	coordinationv1client.CoordinationV1Interface
}

func (c leaseSafeCoordination) Leases(ns string) coordinationv1client.LeaseInterface {
	return leaseSafeLeases{c.CoordinationV1Interface.Leases(ns)}
}

type leaseSafeLeases struct {
	coordinationv1client.LeaseInterface
}

func (l leaseSafeLeases) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	out, err := l.LeaseInterface.Update(ctx, lease, opts)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// countingHandler logs the first few of each simulator warning and counts
// them all.
type countingHandler struct {
	slog.Handler
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	n := h.counts[r.Message]
	h.mu.Unlock()
	if n <= 3 {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) summary() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.counts) == 0 {
		return nil
	}
	return maps.Clone(h.counts)
}

type bench struct {
	cfg     *rest.Config
	client  *kubernetes.Clientset // the tool's own requests
	rec     *recorder
	ns      string
	r       *result
	timeout time.Duration
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig (admin)")
	mode := flag.String("mode", "throughput", "throughput, startup or scale")
	nodes := flag.Int("nodes", 1000, "simulated nodes")
	pods := flag.Int("pods", 10000, "pods (throughput, scale)")
	c := flag.Int("c", 32, "concurrent pod creators (throughput)")
	simWorkers := flag.Int("sim-workers", 64, "node simulator workers")
	qps := flag.Float64("qps", 5000, "client QPS (tool and simulator each)")
	burst := flag.Int("burst", 10000, "client burst")
	rate := flag.Float64("rate", 20, "pods created per second (startup)")
	duration := flag.Duration("duration", 60*time.Second, "how long to create pods (startup)")
	keep := flag.Duration("keep", 10*time.Second, "pods are deleted this long after creation (startup)")
	replicas := flag.Int("replicas", 300, "replicas per Deployment (scale)")
	timeout := flag.Duration("timeout", 5*time.Minute, "time budget from the first create until all pods are bound (throughput) or Running (scale)")
	heartbeat := flag.Duration("heartbeat", 10*time.Second, "simulated nodes' Lease renewal interval (kubelet: 10s)")
	readyTimeout := flag.Duration("ready-timeout", 4*time.Minute, "how long to wait for the nodes to be schedulable before measuring anyway")
	label := flag.String("label", "", "label for the result line")
	cpuProfile := flag.String("cpuprofile", "", "write the tool's own CPU profile (load generator and simulated nodes) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "schedbench:", err)
			os.Exit(2)
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		os.Exit(2)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rec := &recorder{lat: map[string][]time.Duration{}, codes: map[int]int{}}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return timedRT{rec, rt} })

	start := time.Now()
	r := &result{Label: *label, Mode: *mode, Nodes: *nodes}
	err = run(cfg, rec, r, *mode, *nodes, *pods, *c, *simWorkers, *rate, *duration, *keep, *replicas, *timeout, *readyTimeout, *heartbeat)
	r.API = rec.stats()
	r.ToolCPUs = cpuSeconds()
	r.WallS = time.Since(start).Seconds()
	if err != nil {
		r.Error = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(cfg *rest.Config, rec *recorder, r *result, mode string, nodes, pods, c, simWorkers int,
	rate float64, duration, keep time.Duration, replicas int, timeout, readyTimeout, heartbeat time.Duration) error {
	switch mode {
	case "throughput", "startup", "scale":
	default:
		return fmt.Errorf("unknown -mode %q", mode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	simCS, err := kubernetes.NewForConfig(ownConnection(cfg)) // its own rate limiter
	if err != nil {
		return err
	}
	simClient := leaseSafeClient{simCS}
	simWatch, err := kubernetes.NewForConfig(ownConnection(cfg))
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, client: client, rec: rec, r: r, timeout: timeout}

	simLog := &countingHandler{Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), counts: map[string]int{}}
	defer func() { r.SimWarnings = simLog.summary() }()
	// The fleet: capacity well above what the pods request, so only the
	// scheduler's work (not packing) is measured.
	t0 := time.Now()
	sim := nodesim.New(simClient, nodesim.Config{
		Name: simName, Nodes: nodes, Workers: simWorkers, HeartbeatInterval: heartbeat, WatchClient: simWatch,
		Capacity: v1.ResourceList{
			v1.ResourceCPU: resource.MustParse("32"), v1.ResourceMemory: resource.MustParse("256Gi"),
			v1.ResourcePods: resource.MustParse("110"), v1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		},
		Logger: slog.New(simLog),
	})
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	ready := make(chan struct{})
	go func() { simDone <- sim.Run(simCtx, ready) }()
	defer func() { stopSim(); <-simDone }()
	select {
	case <-ready:
	case err := <-simDone:
		simDone <- err
		return fmt.Errorf("node simulator: %w", err)
	}
	if r.NodesSchedulable, err = b.waitNodesSchedulable(ctx, nodes, readyTimeout); err != nil {
		return err
	}
	r.NodesReadyS = time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "schedbench: %d of %d nodes schedulable after %.1fs\n", r.NodesSchedulable, nodes, r.NodesReadyS)

	b.ns = fmt.Sprintf("schedbench-%d", time.Now().UnixNano())
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The service account controller must create "default" before pods
	// can be admitted.
	for {
		if _, err := client.CoreV1().ServiceAccounts(b.ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t := newTracker()
	watchClient, err := kubernetes.NewForConfig(ownConnection(cfg))
	if err != nil {
		return err
	}
	if err := watchPods(ctx, watchClient, b.ns, t); err != nil {
		return err
	}
	// The server's metrics are read on a connection of their own that the
	// recorder does not time.
	mcfg := ownConnection(cfg)
	mcfg.WrapTransport = nil
	metricsClient, err := kubernetes.NewForConfig(mcfg)
	if err != nil {
		return err
	}
	before := scrape(ctx, metricsClient)
	slo := &sloSampler{}
	slo.add(time.Now(), before)
	sloCtx, stopSLO := context.WithCancel(ctx)
	sloDone := make(chan struct{})
	go func() { defer close(sloDone); slo.run(sloCtx, metricsClient, 30*time.Second) }()
	defer func() {
		stopSLO()
		<-sloDone
		after := scrape(ctx, metricsClient)
		slo.add(time.Now(), after)
		r.Server, r.SLO = serverDelta(before, after), slo.stats()
	}()
	rec.on.Store(true)
	defer rec.on.Store(false)
	switch mode {
	case "throughput":
		r.Pods, r.Clients = pods, c
		return b.throughput(ctx, t, pods, c)
	case "startup":
		return b.startup(ctx, t, rate, duration, keep)
	default:
		r.Pods = pods
		return b.scale(ctx, t, pods, replicas)
	}
}

// ownConnection returns a copy of cfg whose clients use a connection of
// their own: client-go shares one HTTP/2 connection among all clients of
// equal configs, and the server writes each connection's frames from one
// goroutine, handing every 4 KB of a response to it and waiting for the
// write. Under a saturated server, a watch that shares the creators' and
// the simulator's connection fell ~30 s behind while watches on other
// connections saw the same events within a second, so the tool measured
// its own connection rather than the server. Kubelets and users have
// connections of their own; so do the simulator and the tool's watch.
func ownConnection(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	d := &net.Dialer{}
	c.Dial = d.DialContext // a distinct dialer: a distinct cached transport
	return c
}

// waitNodesSchedulable waits until n fleet nodes are Ready and untainted,
// or readyTimeout passes; it returns how many are.
func (b *bench) waitNodesSchedulable(ctx context.Context, n int, readyTimeout time.Duration) (int, error) {
	sel := labels.Set{nodesim.LabelManaged: simName}.String()
	deadline := time.Now().Add(readyTimeout)
	interval := time.Second + time.Duration(n/1000)*time.Second
	failures := 0
	for {
		list, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			if failures++; ctx.Err() != nil || failures == 10 {
				return 0, fmt.Errorf("listing nodes: %w", err)
			}
		} else {
			failures = 0
		}
		ok := 0
		if err == nil {
			for _, nd := range list.Items {
				if nodeSchedulable(&nd) {
					ok++
				}
			}
		}
		if ok >= n || time.Now().After(deadline) {
			if ok == 0 {
				return 0, fmt.Errorf("no node schedulable after %s", readyTimeout)
			}
			return ok, nil
		}
		time.Sleep(interval)
	}
}

func nodeSchedulable(n *v1.Node) bool {
	for _, taint := range n.Spec.Taints {
		if taint.Effect == v1.TaintEffectNoSchedule || taint.Effect == v1.TaintEffectNoExecute {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// latencies: create → first seen (pods the tool created), create → bound
// and create → running over the tracked pods that have a create time; bind
// times sorted.
func (t *tracker) latencies() (toSeen, toBound, toRun, boundToRun []time.Duration, binds []time.Time, firstCreate time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pods {
		created := p.created
		if created.IsZero() {
			created = p.seen
		}
		if created.IsZero() {
			continue
		}
		if firstCreate.IsZero() || created.Before(firstCreate) {
			firstCreate = created
		}
		if !p.seen.IsZero() && !p.created.IsZero() {
			toSeen = append(toSeen, p.seen.Sub(created))
		}
		if !p.bound.IsZero() {
			toBound = append(toBound, p.bound.Sub(created))
			binds = append(binds, p.bound)
		}
		if !p.running.IsZero() {
			toRun = append(toRun, p.running.Sub(created))
			if !p.bound.IsZero() {
				boundToRun = append(boundToRun, p.running.Sub(p.bound))
			}
		}
	}
	slices.SortFunc(binds, func(a, b time.Time) int { return a.Compare(b) })
	return
}

func (b *bench) fillLatencies(t *tracker) {
	toSeen, toBound, toRun, boundToRun, binds, firstCreate := t.latencies()
	r := b.r
	r.SeenP50ms, r.SeenP99ms = percentile(toSeen, 0.5), percentile(toSeen, 0.99)
	r.Bound, r.Running = len(toBound), len(toRun)
	r.BoundP50ms, r.BoundP99ms = percentile(toBound, 0.5), percentile(toBound, 0.99)
	r.RunningP50ms, r.RunningP99ms = percentile(toRun, 0.5), percentile(toRun, 0.99)
	if len(toRun) > 0 {
		r.RunningMaxms = ms(slices.Max(toRun))
	}
	r.BoundToRunP99ms = percentile(boundToRun, 0.99)
	if len(binds) > 1 {
		first, last := binds[0], binds[len(binds)-1]
		r.BindWindowPerS = float64(len(binds)-1) / last.Sub(first).Seconds()
		r.BindOverallPerS = float64(len(binds)) / last.Sub(firstCreate).Seconds()
		// Per-second buckets (as upstream scheduler_perf samples throughput).
		buckets := make([]float64, int(last.Sub(first)/time.Second)+1)
		for _, at := range binds {
			buckets[int(at.Sub(first)/time.Second)]++
		}
		if len(buckets) > 1 {
			buckets = buckets[:len(buckets)-1] // the last one is partial
		}
		r.Bind1sMax = slices.Max(buckets)
		slices.Sort(buckets)
		r.Bind1sP50 = buckets[len(buckets)/2]
	}
}

func (b *bench) throughput(ctx context.Context, t *tracker, n, c int) error {
	pods := b.client.CoreV1().Pods(b.ns)
	start := time.Now()
	deadline := start.Add(b.timeout)
	var created atomic.Int64
	elapsed, lat, err := workers(c, n, func(k int) error {
		if time.Now().After(deadline) {
			return errDeadline
		}
		name := fmt.Sprintf("pod-%06d", k)
		t.created(name, time.Now())
		_, err := pods.Create(ctx, pod(name), metav1.CreateOptions{})
		if err == nil {
			created.Add(1)
		}
		return err
	})
	if err != nil && !errors.Is(err, errDeadline) {
		return err
	}
	made := int(created.Load())
	b.r.Created = made
	b.r.CreatesPerS = float64(made) / elapsed.Seconds()
	b.r.CreateP50ms, b.r.CreateP99ms = percentile(lat, 0.5), percentile(lat, 0.99)
	okBound := t.waitFor(ctx, time.Until(deadline), func(bound, _ int) bool { return bound >= made })
	b.r.AllBoundS = time.Since(start).Seconds()
	// Running trails binding by the simulated kubelets' status writes.
	okRun := t.waitFor(ctx, max(time.Until(deadline), 30*time.Second), func(_, running int) bool { return running >= made })
	b.r.AllRunningS = time.Since(start).Seconds()
	b.fillLatencies(t)
	b.r.NotRunning = made - b.r.Running
	switch {
	case made < n:
		b.r.Incomplete = fmt.Sprintf("created %d of %d pods within %s", made, n, b.timeout)
	case !okBound:
		b.r.Incomplete = fmt.Sprintf("%d of %d pods bound within %s", b.r.Bound, n, b.timeout)
	case !okRun:
		b.r.Incomplete = fmt.Sprintf("%d of %d pods Running within %s", b.r.Running, n, b.timeout)
	}
	return nil
}

var errDeadline = errors.New("deadline passed")

func (b *bench) startup(ctx context.Context, t *tracker, rate float64, duration, keep time.Duration) error {
	pods := b.client.CoreV1().Pods(b.ns)
	n := int(rate * duration.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lag := int(keep / interval)
	var wg sync.WaitGroup
	var createErrs, deleted atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			name := fmt.Sprintf("pod-%06d", i)
			t0 := time.Now()
			t.created(name, t0)
			if _, err := pods.Create(ctx, pod(name), metav1.CreateOptions{}); err != nil {
				createErrs.Add(1)
				fmt.Fprintln(os.Stderr, "schedbench: create:", err)
				return
			}
			latMu.Lock()
			lat = append(lat, time.Since(t0))
			latMu.Unlock()
		})
		if j := i - lag; j >= 0 {
			wg.Go(func() {
				if err := pods.Delete(ctx, fmt.Sprintf("pod-%06d", j), metav1.DeleteOptions{}); err == nil {
					deleted.Add(1)
				}
			})
		}
	}
	wg.Wait()
	b.r.RatePerS, b.r.DurationS = rate, duration.Seconds()
	b.r.Pods = n
	b.r.CreatesPerS = float64(n) / time.Since(start).Seconds()
	b.r.CreateP50ms, b.r.CreateP99ms = percentile(lat, 0.5), percentile(lat, 0.99)
	// Pods deleted before they ran (none expected with -keep of seconds)
	// count as not running; wait for the rest.
	t.waitFor(ctx, 30*time.Second, func(_, running int) bool { return running >= n })
	b.fillLatencies(t)
	b.r.Deleted = int(deleted.Load())
	b.r.NotRunning = n - b.r.Running
	if createErrs.Load() > 0 {
		return fmt.Errorf("%d pod creates failed", createErrs.Load())
	}
	if b.r.NotRunning > 0 {
		return fmt.Errorf("%d of %d pods not seen Running", b.r.NotRunning, n)
	}
	return nil
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	lbls := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: podSpec()},
		},
	}
}

// probe sends a GET of a node, and a create and delete of a ConfigMap,
// every 250 ms until ctx ends (recorded with the rest of the traffic).
func (b *bench) probe(ctx context.Context) {
	cms := b.client.CoreV1().ConfigMaps(b.ns)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, _ = b.client.CoreV1().Nodes().Get(ctx, fmt.Sprintf("%s-%d", simName, i%max(b.r.Nodes, 1)), metav1.GetOptions{})
		name := fmt.Sprintf("probe-%d", i)
		if _, err := cms.Create(ctx, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": name}}, metav1.CreateOptions{}); err == nil {
			_ = cms.Delete(ctx, name, metav1.DeleteOptions{})
		}
	}
}

func (b *bench) scale(ctx context.Context, t *tracker, n, replicas int) error {
	replicas = min(replicas, n)
	count := (n + replicas - 1) / replicas
	b.r.Deployments = count
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() { defer close(probeDone); b.probe(probeCtx) }()
	start := time.Now()
	deps := b.client.AppsV1().Deployments(b.ns)
	_, _, err := workers(min(count, 16), count, func(k int) error {
		rs := replicas
		if k == count-1 {
			rs = n - replicas*(count-1)
		}
		_, err := deps.Create(ctx, deployment(fmt.Sprintf("deploy-%03d", k), int32(rs)), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		stopProbe()
		<-probeDone
		return err
	}
	last := time.Now()
	ok := t.waitFor(ctx, b.timeout, func(bound, running int) bool {
		if time.Since(last) >= 10*time.Second {
			fmt.Fprintf(os.Stderr, "schedbench: %d bound, %d/%d Running after %.0fs\n", bound, running, n, time.Since(start).Seconds())
			last = time.Now()
		}
		return running >= n
	})
	b.r.AllRunningS = time.Since(start).Seconds()
	stopProbe()
	<-probeDone
	b.rec.on.Store(false)
	b.fillLatencies(t)
	b.r.RunningPerS = float64(b.r.Running) / b.r.AllRunningS
	b.r.NotRunning = n - b.r.Running
	if !ok {
		b.r.Incomplete = fmt.Sprintf("%d of %d pods Running within %s", b.r.Running, n, b.timeout)
	}

	// LIST every pod in the cluster, as `kubectl get pods -A` would
	// (protobuf, then JSON as kubectl -o json receives it).
	t0 := time.Now()
	list, err := b.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	b.r.ListMs, b.r.Listed = ms(time.Since(t0)), len(list.Items)
	list = nil
	jcfg := rest.CopyConfig(b.cfg)
	jcfg.ContentType, jcfg.AcceptContentTypes = "application/json", "application/json"
	jc, err := kubernetes.NewForConfig(jcfg)
	if err != nil {
		return err
	}
	t0 = time.Now()
	res := jc.CoreV1().RESTClient().Get().Resource("pods").Do(ctx)
	raw, err := res.Raw()
	if err != nil {
		return err
	}
	_, _ = io.Discard.Write(raw)
	b.r.ListJSONMs = ms(time.Since(t0))
	return nil
}
