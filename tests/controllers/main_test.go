// Package controllers tests the control loops of the real skiff binary —
// scheduler, workload controllers, garbage collection, node lifecycle —
// against simulated nodes (agent/nodesim) run by the test process. Each
// test gets its own pool of nodes (selected by a pool label) so tests that
// taint, cordon or lose nodes do not disturb each other.
package controllers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-sh/skiff/agent/nodesim"
	"github.com/skiff-sh/skiff/tests/testserver"
)

var (
	shared   *testserver.Server
	skiffBin string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controllers:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "skiff-controllers-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	if skiffBin, err = testserver.Binary("../..", tmp); err != nil {
		return 0, err
	}
	shared, err = testserver.StartServer(skiffBin, filepath.Join(tmp, "shared"))
	if err != nil {
		return 0, err
	}
	defer shared.Stop()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "controllers: server log tail:\n%s\n", shared.Tail())
	}
	return code, nil
}

func admin(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cfg := shared.RESTConfig(t)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// testName is a DNS-safe, unique name derived from the test's name.
func testName(t *testing.T, max int) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	name = strings.TrimPrefix(name, "test")
	if len(name) > max {
		name = name[:max]
	}
	return fmt.Sprintf("%s-%04x", strings.Trim(name, "-"), rand.IntN(1<<16))
}

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	name := testName(t, 40)
	kubectl(t, "create", "namespace", name)
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "namespace", name, "--wait=false") })
	return name
}

// pool starts n simulated nodes labelled pool=<name> for one test.
func pool(t *testing.T, n int, cfg nodesim.Config) (*nodesim.Sim, string) {
	t.Helper()
	name := testName(t, 30)
	cfg.Name, cfg.Nodes = name, n
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels["pool"] = name
	cs := admin(t)
	sim := nodesim.New(cs, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("node simulator: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_ = sim.Delete(dctx)
	})
	// Nodes are schedulable once the node lifecycle controller has seen
	// them Ready and removed the not-ready taint.
	waitFor(t, 60*time.Second, "pool nodes schedulable", func() (bool, error) {
		nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "pool=" + name})
		if err != nil || len(nodes.Items) != n {
			return false, err
		}
		for _, nd := range nodes.Items {
			for _, taint := range nd.Spec.Taints {
				if taint.Key == v1.TaintNodeNotReady {
					return false, nil
				}
			}
		}
		return true, nil
	})
	return sim, name
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, err := cond()
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
	}
}

func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := shared.Kubectl(t, "", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func kubectlIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := shared.Kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// kubectlCmd starts a long-running kubectl (e.g. -w) in the background.
func kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, skiffBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	return cmd
}

func mustContain(t testing.TB, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("output does not contain %q:\n%s", w, got)
		}
	}
}
