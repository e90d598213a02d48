package controllers

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

// nodeLossWindow is the spec for Skiff's defaults: pods of a lost node run
// elsewhere within 60 s (upstream's defaults take about 6 minutes).
const nodeLossWindow = 60 * time.Second

func TestNodeLossReschedules(t *testing.T) {
	t.Parallel()
	sim, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()
	kubectlIn(t, deploymentYAML("web", poolName, "registry.local/web:1.0", 3), "apply", "-n", ns, "-f", "-")
	kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s")
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	victim := pods.Items[0].Spec.NodeName
	onVictim := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName == victim {
			onVictim++
		}
	}

	lost := time.Now()
	if err := sim.Lose(victim); err != nil {
		t.Fatal(err)
	}
	// Recovered: 3 ready pods, none of them on the lost node.
	waitFor(t, 3*nodeLossWindow, "pods running on the remaining nodes", func() (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		readyElsewhere := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Spec.NodeName != victim && ready(&p) {
				readyElsewhere++
			}
		}
		return readyElsewhere == 3, nil
	})
	took := time.Since(lost)
	t.Logf("node loss: %d pod(s) of %s running elsewhere %.1fs after its heartbeats stopped", onVictim, victim, took.Seconds())
	if took > nodeLossWindow {
		t.Fatalf("pods of the lost node took %s to run elsewhere; the default window is %s", took.Round(time.Second), nodeLossWindow)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unknown, tainted := false, false
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady && c.Status == v1.ConditionUnknown {
			unknown = true
		}
	}
	for _, taint := range n.Spec.Taints {
		if taint.Key == v1.TaintNodeUnreachable && taint.Effect == v1.TaintEffectNoExecute {
			tainted = true
		}
	}
	if !unknown || !tainted {
		t.Fatalf("lost node: Ready=Unknown %v, unreachable NoExecute taint %v; conditions %+v taints %+v", unknown, tainted, n.Status.Conditions, n.Spec.Taints)
	}

	// The node comes back: Ready again and the taint is lifted.
	if err := sim.Restore(victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "restored node Ready and untainted", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == v1.TaintNodeUnreachable || taint.Key == v1.TaintNodeNotReady {
				return false, nil
			}
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

// A single missed heartbeat must not flap the node: with 10 s heartbeats
// and the 30 s grace period, a 20 s gap between renewals leaves it Ready.
func TestNodeSingleMissedHeartbeatNoFlap(t *testing.T) {
	t.Parallel()
	sim, _ := pool(t, 1, nodesim.Config{})
	cs := admin(t)
	ctx := context.Background()
	name := sim.NodeNames()[0]
	renewTime := func() time.Time {
		l, err := cs.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
		if err != nil || l.Spec.RenewTime == nil {
			t.Fatalf("node lease: %v", err)
		}
		return l.Spec.RenewTime.Time
	}
	// Lose the node just after a renewal, and restore it after the next
	// one was missed: exactly one heartbeat is skipped.
	first := renewTime()
	waitFor(t, 15*time.Second, "a lease renewal", func() (bool, error) { return renewTime().After(first), nil })
	if err := sim.Lose(name); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	checkReady := func(until time.Time) {
		for time.Now().Before(until) {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range n.Status.Conditions {
				if c.Type == v1.NodeReady && c.Status != v1.ConditionTrue {
					t.Fatalf("node went Ready=%s %.1fs after one missed heartbeat", c.Status, time.Since(lostAt).Seconds())
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	checkReady(lostAt.Add(11 * time.Second))
	if err := sim.Restore(name); err != nil {
		t.Fatal(err)
	}
	checkReady(lostAt.Add(30 * time.Second))
}
