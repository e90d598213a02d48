package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-sh/skiff/agent/killall"
	"github.com/skiff-sh/skiff/tests/testserver"
)

const (
	netnsName = "skiff-e2e-n2"
	node2     = "skiff-e2e-2"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netns makes a network namespace linked to the host by a veth pair:
// hostIP on the host side, node2IP inside, default route via the host.
func netns(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to build the second node's network namespace")
	}
	_ = exec.Command("ip", "netns", "del", netnsName).Run()
	_ = exec.Command("ip", "link", "del", "sk-e2e-h").Run()
	sh(t, "ip", "netns", "add", netnsName)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", netnsName).Run() })
	sh(t, "ip", "link", "add", "sk-e2e-h", "type", "veth", "peer", "name", "sk-e2e-n")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "sk-e2e-h").Run() })
	sh(t, "ip", "link", "set", "sk-e2e-n", "netns", netnsName)
	sh(t, "ip", "addr", "add", hostIP+"/24", "dev", "sk-e2e-h")
	sh(t, "ip", "link", "set", "sk-e2e-h", "up")
	in := func(args ...string) { sh(t, append([]string{"ip", "netns", "exec", netnsName}, args...)...) }
	in("ip", "addr", "add", node2IP+"/24", "dev", "sk-e2e-n")
	in("ip", "link", "set", "sk-e2e-n", "up")
	in("ip", "link", "set", "lo", "up")
	in("ip", "route", "add", "default", "via", hostIP)
}

// agentCmd is `skiff agent` inside the namespace. nsenter, unlike `ip
// netns exec`, keeps the host's /sys (and so its cgroup mounts).
func agentCmd(dir, token, name string, port int) *exec.Cmd {
	return exec.Command("nsenter", "--net=/var/run/netns/"+netnsName, "--",
		shared.Bin, "agent", "--server", fmt.Sprintf("https://%s:%d", hostIP, shared.Port), "--token", token,
		"--data-dir", filepath.Join(dir, "data"), "--run-dir", filepath.Join(dir, "run"),
		"--node-name", name, "--node-ip", node2IP, "--cgroup-root", "/skiff-e2e-2",
		"--kubelet-port", fmt.Sprint(port), "--shim-grouping", "pod")
}

func nodeToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shared.DataDir, "server", "node-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// joinFails runs an agent that must give up at once with a message.
func joinFails(t *testing.T, token, name string, wants ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := agentCmd(t.TempDir(), token, name, 1)
	cmd = exec.CommandContext(ctx, cmd.Args[0], cmd.Args[1:]...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("agent with a bad join did not exit within 30s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("agent with a bad join exited 0:\n%s", out)
	}
	testserver.MustContain(t, string(out), wants...)
}

func TestSecondNodeJoins(t *testing.T) {
	setup(t)
	netns(t)
	token := nodeToken(t)
	hash, secret, _ := strings.Cut(strings.TrimPrefix(token, "K10"), "::server:")

	t.Run("wrong token", func(t *testing.T) {
		joinFails(t, "K10"+hash+"::server:not-the-secret", "skiff-e2e-bad", "join token rejected")
	})
	t.Run("wrong CA hash", func(t *testing.T) {
		joinFails(t, "K10"+strings.Repeat("ab", 32)+"::server:"+secret, "skiff-e2e-bad", "does not match the join token's CA hash")
	})

	dir := t.TempDir()
	port, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := agentCmd(dir, token, node2, port)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = killall.Run(killall.Config{CgroupRoot: "/skiff-e2e-2", RunDir: filepath.Join(dir, "run"), DataDir: filepath.Join(dir, "data")})
		_ = admin(t).CoreV1().Nodes().Delete(context.Background(), node2, metav1.DeleteOptions{})
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("second agent log tail:\n%s", b)
		}
	})

	cs := admin(t)
	err = wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-done:
			done <- err
			return false, fmt.Errorf("agent exited: %v", err)
		default:
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, node2, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("second node not Ready: %v", err)
	}
	n, _ := cs.CoreV1().Nodes().Get(context.Background(), node2, metav1.GetOptions{})
	if _, ok := n.Labels["node-role.kubernetes.io/control-plane"]; ok {
		t.Errorf("an agent-only node got the control-plane label")
	}

	// Another machine may not take the name over (its own node password).
	t.Run("node name taken", func(t *testing.T) {
		joinFails(t, token, node2, "node password mismatch")
	})

	ns := shared.Namespace(t)
	demoPod(t, ns, "on-node2", func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node2} })
	p := waitPod(t, ns, "on-node2", 90*time.Second, "running on the second node", running)
	if p.Spec.NodeName != node2 || p.Status.HostIP != node2IP {
		t.Fatalf("pod on %s with hostIP %s", p.Spec.NodeName, p.Status.HostIP)
	}
	// Logs come from the second node's kubelet through the API server.
	testserver.MustContain(t, kubectl(t, "-n", ns, "logs", "on-node2"), "serving on :8080")
	_, usage, _ := shared.Kubectl(t, "", "-n", ns, "exec", "on-node2", "--", "/demo", "-h")
	testserver.MustContain(t, usage, "burn-memory-mb")

	// This node runs with --shim-grouping pod: upstream's shim per pod.
	demoPod(t, ns, "on-node2-b", func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node2} })
	pb := waitPod(t, ns, "on-node2-b", 90*time.Second, "running on the second node", running)
	run2 := filepath.Join(dir, "run")
	if a, b := shimOf(t, run2, p.Status.ContainerStatuses[0].ContainerID), shimOf(t, run2, pb.Status.ContainerStatuses[0].ContainerID); a == b {
		t.Fatalf("two pods share shim %d with --shim-grouping pod", a)
	}
}
