// Package agent tests Skiff's node agent end to end, as root, with the
// real binary: `skiff server` with its own agent runs real containers
// through the embedded containerd and runc; a second `skiff agent` joins
// from its own network namespace. Every check that a container runs,
// stops or restarts is made against containerd itself, not only the API.
package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-sh/skiff/agent/checkconfig"
	"github.com/skiff-sh/skiff/agent/killall"
	"github.com/skiff-sh/skiff/images/oci"
	"github.com/skiff-sh/skiff/tests/testserver"
)

const (
	demoImage   = "skiff.local/demo:v1"
	airgapImage = "skiff.local/airgap:v1"
	nodeName    = "skiff-e2e-1"
	// hostIP is the host end of the second node's network namespace link.
	hostIP  = "10.199.0.1"
	node2IP = "10.199.0.2"
)

var (
	shared  *testserver.Server
	runDir  string
	skipWhy string
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		skipWhy = "the node agent needs root (containers, mounts, cgroups); run as root"
	} else if err := checkconfig.Error(checkconfig.Host()); err != nil {
		skipWhy = err.Error()
	}
	if skipWhy != "" {
		fmt.Fprintln(os.Stderr, "tests/agent: SKIPPING:", skipWhy)
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "skiff-agent-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, err := testserver.Binary("../..", tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir := filepath.Join(tmp, "server")
	runDir = filepath.Join(tmp, "run")
	// An air-gap tarball waits in the images directory before the start.
	if err := writeAirgapImage(filepath.Join(dir, "agent", "images"), tmp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	configDir := filepath.Join(tmp, "etc")
	if err := startRegistry(tmp, configDir); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		return 1
	}
	defer stopRegistry()
	port, err := testserver.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := testserver.StartAgentServer(bin, dir, "--node-name", nodeName, "--run-dir", runDir,
		"--kubelet-port", fmt.Sprint(port), "--cgroup-root", "/skiff-e2e",
		"--bind-address", "0.0.0.0", "--tls-san", hostIP, "--config-dir", configDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		s.Stop()
		if err := killall.Run(killall.Config{CgroupRoot: "/skiff-e2e", RunDir: runDir, DataDir: dir, Bridge: "cni0"}); err != nil {
			fmt.Fprintln(os.Stderr, "killall:", err)
		}
	}()
	shared = s
	if err := waitNodeReady(s, nodeName, 90*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "%v; server log tail:\n%s\n", err, s.Tail())
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "server log tail:\n%s\n", s.Tail())
	}
	return code
}

// writeAirgapImage puts an image tarball (Skiff's pause program under
// another name) where the agent imports air-gap images from.
func writeAirgapImage(dir, tmp string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	prog := filepath.Join(tmp, "airgap")
	cmd := exec.Command("gcc", "-static", "-Os", "-o", prog, "../../images/pause/pause.c")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build air-gap program: %v\n%s", err, out)
	}
	data, err := os.ReadFile(prog)
	if err != nil {
		return err
	}
	tarball, err := oci.ImageTar(airgapImage, goruntime.GOARCH, "airgap", data, nil)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "airgap.tar"), tarball, 0o600)
}

func setup(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

func admin(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(shared.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	return shared.MustKubectl(t, "", args...)
}

// runtime connects to the node's containerd.
func runtimeClient(t testing.TB) (*containerd.Client, context.Context) {
	t.Helper()
	return runtimeClientAt(t, runDir)
}

// runtimeClientAt connects to the containerd of the agent using run.
func runtimeClientAt(t testing.TB, run string) (*containerd.Client, context.Context) {
	t.Helper()
	cl, err := containerd.New(filepath.Join(run, "containerd", "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, namespaces.WithNamespace(context.Background(), "k8s.io")
}

// taskStatus is the runtime's view of a container ("running", "stopped",
// or "absent").
func taskStatus(t testing.TB, containerID string) string {
	t.Helper()
	cl, ctx := runtimeClient(t)
	id := strings.TrimPrefix(containerID, "containerd://")
	c, err := cl.LoadContainer(ctx, id)
	if err != nil {
		return "absent"
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return "absent"
	}
	st, err := task.Status(ctx)
	if err != nil {
		return "absent"
	}
	return string(st.Status)
}

// shimOf returns the PID of the runc shim serving a pod's container (the
// parent of the container's init process) on the agent using run.
func shimOf(t testing.TB, run, containerID string) int {
	t.Helper()
	pid := taskPIDAt(t, run, containerID)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var ppid int
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			ppid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid))
	if !strings.Contains(string(cmdline), "containerd-shim-runc-v2") {
		t.Fatalf("parent %d of container %s is %q, want its shim", ppid, containerID, cmdline)
	}
	return ppid
}

// waitPod waits until cond holds for the pod.
func waitPod(t testing.TB, ns, name string, timeout time.Duration, what string, cond func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	cs := admin(t)
	var last *v1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s: %s: %v\nlast status: %+v\nevents:\n%s", ns, name, what, err, last.Status, kubectl(t, "-n", ns, "get", "events"))
	}
	return last
}

func running(p *v1.Pod) bool {
	if p.Status.Phase != v1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// taskPID is the host PID of a running container's process.
func taskPID(t testing.TB, containerID string) uint32 {
	t.Helper()
	return taskPIDAt(t, runDir, containerID)
}

// taskPIDAt is taskPID on the agent using run.
func taskPIDAt(t testing.TB, run, containerID string) uint32 {
	t.Helper()
	cl, ctx := runtimeClientAt(t, run)
	c, err := cl.LoadContainer(ctx, strings.TrimPrefix(containerID, "containerd://"))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return task.Pid()
}

// waitNodeReady waits for the server's own node to report Ready.
func waitNodeReady(s *testserver.Server, name string, timeout time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready after %s: %w", name, timeout, err)
	}
	return nil
}
