package controllers

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The `skiff nodesim` command registers nodes with the given capacity that
// run pods, and removes its nodes on exit with --delete-on-exit.
func TestNodesimCommand(t *testing.T) {
	t.Parallel()
	name := testName(t, 20)
	cmd := exec.Command(skiffBin, "nodesim", "--nodes", "2", "--name", name, "--cpu", "2", "--memory", "4Gi", "--delete-on-exit")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	cs := admin(t)
	ctx := context.Background()
	node := name + "-0"
	waitFor(t, 60*time.Second, "simulated nodes Ready with their capacity", func() (bool, error) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "nodesim.skiff.dev/managed-by=" + name})
		if err != nil || len(nodes.Items) != 2 {
			return false, err
		}
		for _, n := range nodes.Items {
			if n.Status.Capacity.Cpu().String() != "2" || n.Status.Capacity.Memory().String() != "4Gi" {
				return false, nil
			}
			for _, c := range n.Status.Conditions {
				if c.Type == v1.NodeReady && c.Status != v1.ConditionTrue {
					return false, nil
				}
			}
		}
		return true, nil
	})
	ns := namespace(t)
	kubectlIn(t, `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  nodeName: `+node+`
  containers: [{name: c, image: registry.local/x:1}]
`, "apply", "-n", ns, "-f", "-")
	waitFor(t, 30*time.Second, "pod Running on the simulated node", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
		return err == nil && p.Status.Phase == v1.PodRunning && p.Status.PodIP != "", err
	})
	mustContain(t, kubectl(t, "get", "pod", "p", "-n", ns, "-o", "wide"), "Running", node)

	// SIGINT: the command deletes its nodes and exits cleanly.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("skiff nodesim exited with %v:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("skiff nodesim did not stop:\n%s", out.String())
	}
	for _, n := range []string{name + "-0", name + "-1"} {
		if _, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("node %s after --delete-on-exit: %v", n, err)
		}
	}
	if !strings.Contains(out.String(), "simulated nodes registered") {
		t.Fatalf("no registration message in output:\n%s", out.String())
	}
}
