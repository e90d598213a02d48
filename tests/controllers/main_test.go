// Package controllers tests the control loops of the real skiff binary —
// scheduler, workload controllers, garbage collection, node lifecycle —
// against simulated nodes (agent/nodesim) run by the test process. Each
// test gets its own pool of nodes (selected by a pool label) so tests that
// taint, cordon or lose nodes do not disturb each other.
package controllers

import (
	"context"
	"os"
	"os/exec"
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
	os.Exit(testserver.Main(m, "controllers", "../..", func(s *testserver.Server) { shared, skiffBin = s, s.Bin }))
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
	return testserver.UniqueName(t, max)
}

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	return shared.NamedNamespace(t, testName(t, 40))
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
	return shared.MustKubectl(t, "", args...)
}

func kubectlIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	return shared.MustKubectl(t, stdin, args...)
}

// kubectlCmd starts a long-running kubectl (e.g. -w) in the background.
func kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, skiffBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	return cmd
}

func mustContain(t testing.TB, got string, wants ...string) {
	t.Helper()
	testserver.MustContain(t, got, wants...)
}
