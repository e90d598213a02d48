// Command agentbench measures Skiff's node side on this machine, as root:
//
//   - cold start: `skiff server` (with its agent) from an empty data dir to
//     its node Ready;
//   - memory (PSS summed over every process Skiff runs: skiff, its
//     containerd, the shims; plus each process's RssAnon) of the whole
//     single-node cluster idle, and of an agent-only node (a second
//     `skiff agent` in its own network namespace) with 0 and N pods;
//   - pod startup latency (create → Running seen by a watch) for N pods
//     created at R pods/s on the agent-only node, image present;
//   - binary and artifact sizes: the downloadable (-dist, `make dist`), the
//     time its first run takes to extract itself and a later run's start,
//     and for comparison the binary compressed as one zstd stream.
//
// It prints one "key value" line per figure; scripts/bench.sh turns them
// into the report.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	bin := flag.String("bin", "bin/skiff", "skiff binary")
	pods := flag.Int("pods", 30, "pods to start on the agent-only node (0: cold start and cluster memory only)")
	rate := flag.Float64("rate", 5, "pods created per second")
	settle := flag.Duration("settle", 20*time.Second, "wait before memory readings")
	flag.Func("agent-arg", "extra flag for the agent-only node (repeatable; experiments)", func(v string) error { agentArgs = append(agentArgs, v); return nil })
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the server process during the pod burst to this file")
	flag.StringVar(&keepLogs, "keep-logs", "", "copy the server's and the agent's logs into this directory at the end")
	flag.StringVar(&shimGrouping, "shim-grouping", "node", "--shim-grouping of the server and agent (node or pod)")
	flag.StringVar(&dist, "dist", "", "the downloadable artifact (`make dist`): its size and first-run extraction time")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "agentbench: needs root")
		os.Exit(2)
	}
	if err := run(*bin, *pods, *rate, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

const (
	netns   = "skiff-bench-n2"
	hostIP  = "10.198.0.1"
	node2IP = "10.198.0.2"
)

// agentArgs are passed to the agent-only node.
var agentArgs []string

// cpuProfile, when set, names the server CPU profile file.
var cpuProfile string

// shimGrouping is passed to both nodes (A/B of the node-wide shim).
var shimGrouping string

// keepLogs, when set, is where the nodes' logs are copied at the end.
var keepLogs string

// dist, when set, is the self-extracting artifact.
var dist string

func out(key string, v any) { fmt.Printf("%s %v\n", key, v) }

func run(bin string, npods int, rate float64, settle time.Duration) error {
	bin, _ = filepath.Abs(bin)
	if err := sizes(bin); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "skiff-agentbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if keepLogs != "" {
		defer copyLogs(tmp, keepLogs)
	}
	port := 17443
	kubeconfig := filepath.Join(tmp, "kubeconfig.yaml")
	srvRun := filepath.Join(tmp, "run1")
	start := time.Now()
	srv := exec.Command(bin, "server", "--data-dir", filepath.Join(tmp, "s"), "--https-listen-port", strconv.Itoa(port),
		"--write-kubeconfig", kubeconfig, "--node-name", "bench-1", "--run-dir", srvRun, "--cgroup-root", "/skiff-bench",
		"--kubelet-port", "17250", "--tls-san", hostIP, "--shim-grouping", shimGrouping)
	if cpuProfile != "" {
		srv.Args = append(srv.Args, "--kube-apiserver-arg=profiling=true")
	}
	logf, _ := os.Create(filepath.Join(tmp, "server.log"))
	srv.Stdout, srv.Stderr = logf, logf
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_, _ = srv.Process.Wait()
		_ = exec.Command(bin, "killall", "--data-dir", filepath.Join(tmp, "s"), "--run-dir", srvRun, "--cgroup-root", "/skiff-bench").Run()
	}()
	ctx := context.Background()
	var cs *kubernetes.Clientset
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if cs == nil {
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return false, nil
			}
			cfg.QPS, cfg.Burst = 100, 100
			cs = kubernetes.NewForConfigOrDie(cfg)
		}
		return nodeReady(ctx, cs, "bench-1"), nil
	}); err != nil {
		return fmt.Errorf("server node not Ready: %w (log %s)", err, logf.Name())
	}
	out("cold_start_to_node_ready_s", fmt.Sprintf("%.2f", time.Since(start).Seconds()))

	time.Sleep(settle)
	if err := memory("cluster_idle", srv.Process.Pid, srvRun); err != nil {
		return err
	}

	if npods == 0 {
		return nil
	}
	// The agent-only node, in its own network namespace.
	if err := setupNetns(); err != nil {
		return err
	}
	defer teardownNetns()
	token, err := os.ReadFile(filepath.Join(tmp, "s", "server", "node-token"))
	if err != nil {
		return err
	}
	agRun := filepath.Join(tmp, "run2")
	ag := exec.Command("nsenter", "--net=/var/run/netns/"+netns, "--", bin, "agent",
		"--server", fmt.Sprintf("https://%s:%d", hostIP, port), "--token", strings.TrimSpace(string(token)),
		"--data-dir", filepath.Join(tmp, "a"), "--run-dir", agRun, "--node-name", "bench-2", "--node-ip", node2IP,
		"--cgroup-root", "/skiff-bench-2", "--kubelet-port", "17251", "--shim-grouping", shimGrouping)
	ag.Args = append(ag.Args, agentArgs...)
	alog, _ := os.Create(filepath.Join(tmp, "agent.log"))
	ag.Stdout, ag.Stderr = alog, alog
	ag.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	agStart := time.Now()
	if err := ag.Start(); err != nil {
		return err
	}
	defer func() {
		_ = ag.Process.Signal(syscall.SIGTERM)
		_, _ = ag.Process.Wait()
		_ = exec.Command(bin, "killall", "--data-dir", filepath.Join(tmp, "a"), "--run-dir", agRun, "--cgroup-root", "/skiff-bench-2").Run()
	}()
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return nodeReady(ctx, cs, "bench-2"), nil
	}); err != nil {
		return fmt.Errorf("agent node not Ready: %w (log %s)", err, alog.Name())
	}
	out("agent_start_to_node_ready_s", fmt.Sprintf("%.2f", time.Since(agStart).Seconds()))
	time.Sleep(settle)
	agentPID := ag.Process.Pid // nsenter execs skiff in place
	if err := memory("agent_0pods", agentPID, agRun); err != nil {
		return err
	}

	cpu0, steal0 := busyJiffies()
	procs0 := cpuByKind(srv.Process.Pid, agentPID, agRun)
	pods0 := podsCgroupCPU("/skiff-bench-2")
	profDone := make(chan error, 1)
	if cpuProfile != "" {
		go func() {
			secs := int(float64(npods)/rate) + 1
			b, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(secs)).DoRaw(ctx)
			if err == nil {
				err = os.WriteFile(cpuProfile, b, 0o644)
			}
			profDone <- err
		}()
	} else {
		profDone <- nil
	}
	lat, stages, err := startPods(ctx, cs, npods, rate)
	if err != nil {
		return err
	}
	if err := <-profDone; err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	for kind, j := range cpuByKind(srv.Process.Pid, agentPID, agRun) {
		out("pod_startup_cpu_ms_per_pod_"+kind, (j-procs0[kind])*1000/clockTick/int64(npods))
	}
	// runc init runs in the pod's cgroup and becomes the container's
	// process, so neither the shim's nor anyone's child time has it.
	if pods1 := podsCgroupCPU("/skiff-bench-2"); pods0 >= 0 && pods1 >= 0 {
		out("pod_startup_cpu_ms_per_pod_runc_init_and_containers", (pods1-pods0)/1e6/int64(npods))
	}
	// Host CPU (all processes: API server, kubelet, containerd, shims,
	// runc, CNI) from the first create to the last pod Running.
	cpu1, steal1 := busyJiffies()
	out("pod_startup_host_cpu_ms_per_pod", (cpu1-cpu0)*1000/clockTick/int64(npods))
	// CPU time the hypervisor gave to others while this VM wanted it: on
	// a shared host it varies from run to run and slows everything above.
	out("pod_startup_host_steal_ms_per_pod", (steal1-steal0)*1000/clockTick/int64(npods))
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	out("pod_startup_p50_ms", lat[len(lat)/2].Milliseconds())
	out("pod_startup_p99_ms", lat[(len(lat)*99+99)/100-1].Milliseconds())
	out("pod_startup_max_ms", lat[len(lat)-1].Milliseconds())
	for _, st := range stageNames {
		d := stages[st]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		if len(d) > 0 {
			out("pod_startup_stage_"+st+"_p50_ms", d[len(d)/2].Milliseconds())
			out("pod_startup_stage_"+st+"_p99_ms", d[(len(d)*99+99)/100-1].Milliseconds())
		}
	}
	time.Sleep(settle)
	return memory(fmt.Sprintf("agent_%dpods", npods), agentPID, agRun)
}

func nodeReady(ctx context.Context, cs kubernetes.Interface, name string) bool {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// stageNames are the steps of a pod's startup as a watch sees them:
// created (the create request's round trip), bound (the scheduler set
// spec.nodeName), kubelet (the kubelet's first status: startTime set,
// before it makes the sandbox), running (phase Running).
var stageNames = []string{"create", "bind", "kubelet", "running"}

// startPods creates n pods at rate pods/s and returns each one's create →
// Running latency and, per stage name, how long each pod spent in it.
func startPods(ctx context.Context, cs kubernetes.Interface, n int, rate float64) ([]time.Duration, map[string][]time.Duration, error) {
	ns := "agentbench"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, nil, err
	}
	// The default ServiceAccount must exist before pods are admitted.
	_ = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer w.Stop()
	created := map[string]time.Time{}
	lat := map[string]time.Duration{}
	// seen[name][stage]: when the watch (or the create call) first saw it.
	seen := map[string]map[string]time.Time{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	deadline := time.After(time.Duration(float64(n)/rate)*time.Second + 2*time.Minute)
	i := 0
	for len(lat) < n {
		select {
		case <-tick.C:
			if i < n {
				name := fmt.Sprintf("p%03d", i)
				created[name] = time.Now()
				p := &v1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec: v1.PodSpec{
						NodeSelector:                  map[string]string{"kubernetes.io/hostname": "bench-2"},
						TerminationGracePeriodSeconds: new(int64),
						Containers:                    []v1.Container{{Name: "demo", Image: "skiff.local/demo:v1", ImagePullPolicy: v1.PullNever}},
					},
				}
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					return nil, nil, err
				}
				mark(seen, name, "create")
				i++
			}
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil, fmt.Errorf("watch ended")
			}
			p, ok := ev.Object.(*v1.Pod)
			if !ok {
				continue
			}
			if p.Spec.NodeName != "" {
				mark(seen, p.Name, "bind")
			}
			if p.Status.StartTime != nil {
				mark(seen, p.Name, "kubelet")
			}
			if _, done := lat[p.Name]; !done && p.Status.Phase == v1.PodRunning {
				if t0, ok := created[p.Name]; ok {
					lat[p.Name] = time.Since(t0)
					mark(seen, p.Name, "running")
				}
			}
		case <-deadline:
			return nil, nil, fmt.Errorf("only %d of %d pods Running in time", len(lat), n)
		}
	}
	outl := make([]time.Duration, 0, n)
	stages := map[string][]time.Duration{}
	for name, d := range lat {
		outl = append(outl, d)
		prev := created[name]
		for _, st := range stageNames {
			t, ok := seen[name][st]
			if !ok {
				continue // a step the watch skipped (two changes in one event)
			}
			stages[st] = append(stages[st], t.Sub(prev))
			prev = t
		}
	}
	return outl, stages, nil
}

// mark records when name first reached stage.
func mark(seen map[string]map[string]time.Time, name, stage string) {
	if seen[name] == nil {
		seen[name] = map[string]time.Time{}
	}
	if _, ok := seen[name][stage]; !ok {
		seen[name][stage] = time.Now()
	}
}

// memory reports PSS summed over skiff (pid), its containerd child and the
// shims serving runDir, and RssAnon per process kind.
func memory(prefix string, pid int, runDir string) error {
	procs := nodeProcs(pid, runDir)
	var pss, anonShims, pssPause int
	shims, pauses := 0, 0
	for p, kind := range procs {
		pp := field("/proc/"+strconv.Itoa(p)+"/smaps_rollup", "Pss:")
		anon := field("/proc/"+strconv.Itoa(p)+"/status", "RssAnon:")
		switch kind {
		case "pause": // a pod's own sandbox process: reported apart from Skiff's
			pauses++
			pssPause += pp
		case "shim":
			pss += pp
			shims++
			anonShims += anon
		default:
			pss += pp
			out(prefix+"_rssanon_"+kind+"_mb", anon/1024)
		}
	}
	out(prefix+"_shims", shims)
	if shims > 0 {
		out(prefix+"_rssanon_per_shim_mb", fmt.Sprintf("%.1f", float64(anonShims)/1024/float64(shims)))
	}
	out(prefix+"_pss_total_mb", pss/1024)
	if pauses > 0 {
		out(prefix+"_pause_processes", pauses)
		out(prefix+"_pss_pause_total_mb", fmt.Sprintf("%.1f", float64(pssPause)/1024))
	}
	return nil
}

// shimOf reports whether pid's parent is a shim serving runDir (a pod's
// sandbox process on the node under test).
func shimOf(pid int, runDir string) bool {
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(ppid(pid)) + "/cmdline")
	return strings.Contains(string(cmd), "containerd-shim-runc-v2") && strings.Contains(string(cmd), runDir+"/")
}

// cpuByKind is CPU time (jiffies) of the server process (API server,
// controllers, scheduler, its own idle kubelet), the agent process
// (kubelet), the agent's containerd with the children it waited for (CNI
// plugins, shim start-ups) and its shims with theirs (runc).
func cpuByKind(serverPID, agentPID int, runDir string) map[string]int64 {
	m := map[string]int64{"server": procCPU(serverPID)}
	for p, kind := range nodeProcs(agentPID, runDir) {
		switch kind {
		case "skiff":
			m["agent"] += procCPU(p)
		case "containerd":
			m["containerd_cni"] += procCPU(p)
		case "shim":
			m["shims_runc"] += procCPU(p)
		}
	}
	return m
}

// nodeProcs finds a node's processes by kind: skiff (pid itself), its
// containerd child, the shims serving runDir and the pods' pause
// processes under them.
func nodeProcs(pid int, runDir string) map[int]string {
	procs := map[int]string{pid: "skiff"}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(cmd), "\x00")
		switch {
		case args[0] == "skiff-containerd" && ppid(p) == pid:
			procs[p] = "containerd"
		case filepath.Base(args[0]) == "containerd-shim-runc-v2" && strings.Contains(string(cmd), runDir+"/"):
			procs[p] = "shim"
		case args[0] == "/pause" && shimOf(p, runDir):
			procs[p] = "pause"
		}
	}
	return procs
}

// procCPU is utime+stime+cutime+cstime of pid in jiffies.
func procCPU(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest) // f[0] is field 3 (state)
	var t int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			t += n
		}
	}
	return t
}

// clockTick is USER_HZ, the unit of /proc/stat.
const clockTick = 100

// busyJiffies is the host's CPU time so far spent running (user, nice,
// system, irq, softirq) and, apart, stolen by the hypervisor (/proc/stat).
func busyJiffies() (busy, steal int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		switch i {
		case 0, 1, 2, 5, 6: // user, nice, system, irq, softirq
			busy += n
		case 7:
			steal += n
		} // idle and iowait are not busy; guest time is counted in user
	}
	return busy, steal
}

// podsCgroupCPU is the CPU time (ns) used so far in the kubepods cgroup
// under the node's cgroup root (cgroup v2 or v1 cpuacct); -1 if unknown.
func podsCgroupCPU(root string) int64 {
	if b, err := os.ReadFile("/sys/fs/cgroup" + root + "/kubepods/cpu.stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n * 1000
			}
		}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cpuacct" + root + "/kubepods/cpuacct.usage"); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	return -1
}

func ppid(pid int) int {
	return field("/proc/"+strconv.Itoa(pid)+"/status", "PPid:")
}

// field reads the first number after name in a /proc file (kB for sizes).
func field(path, name string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == name {
			n, _ := strconv.Atoi(fs[1])
			return n
		}
	}
	return 0
}

func sizes(bin string) error {
	// The artifact first, while this process is small: a child started
	// with vfork inherits the parent's peak RSS into its own maximum.
	if dist != "" {
		if err := artifact(bin); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	out("binary_mb", fmt.Sprintf("%.1f", float64(len(data))/1e6))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		return err
	}
	out("artifact_zstd_mb", fmt.Sprintf("%.1f", float64(len(enc.EncodeAll(data, nil)))/1e6))
	return nil
}

// artifact reports the downloadable's size and its first and a later run.
func artifact(bin string) error {
	st, err := os.Stat(dist)
	if err != nil {
		return err
	}
	bst, err := os.Stat(bin)
	if err != nil {
		return err
	}
	out("artifact_mb", fmt.Sprintf("%.1f", float64(st.Size())/1e6))
	out("artifact_unpacked_mb", fmt.Sprintf("%.1f", float64(bst.Size())/1e6))
	dir, err := os.MkdirTemp("", "skiff-agentbench-dist-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, key := range []string{"artifact_first_run_extract_s", "artifact_later_run_version_s"} {
		cmd := exec.Command(dist, "--version")
		cmd.Env = append(os.Environ(), "SKIFF_DATA_DIR="+dir)
		t0 := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s --version: %v: %s", dist, err, b)
		}
		out(key, fmt.Sprintf("%.2f", time.Since(t0).Seconds()))
		if key == "artifact_first_run_extract_s" {
			out("artifact_first_run_max_rss_mb", cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss>>10)
		}
	}
	return nil
}

func sh(args ...string) error {
	if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, b)
	}
	return nil
}

func setupNetns() error {
	teardownNetns()
	for _, c := range [][]string{
		{"ip", "netns", "add", netns},
		{"ip", "link", "add", "sk-bench-h", "type", "veth", "peer", "name", "sk-bench-n"},
		{"ip", "link", "set", "sk-bench-n", "netns", netns},
		{"ip", "addr", "add", hostIP + "/24", "dev", "sk-bench-h"},
		{"ip", "link", "set", "sk-bench-h", "up"},
		{"ip", "netns", "exec", netns, "ip", "addr", "add", node2IP + "/24", "dev", "sk-bench-n"},
		{"ip", "netns", "exec", netns, "ip", "link", "set", "sk-bench-n", "up"},
		{"ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", netns, "ip", "route", "add", "default", "via", hostIP},
	} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	return nil
}

func teardownNetns() {
	_ = exec.Command("ip", "netns", "del", netns).Run()
	_ = exec.Command("ip", "link", "del", "sk-bench-h").Run()
}

// copyLogs copies the *.log files of dir into to.
func copyLogs(dir, to string) {
	if err := os.MkdirAll(to, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench: -keep-logs:", err)
		return
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	// The agent-only node's containerd (its CRI calls, with times).
	logs = append(logs, filepath.Join(dir, "a", "agent", "containerd", "containerd.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			name := filepath.Base(l)
			if name == "containerd.log" {
				name = "agent-containerd.log"
			}
			err = os.WriteFile(filepath.Join(to, name), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "agentbench: -keep-logs:", err)
		}
	}
}
