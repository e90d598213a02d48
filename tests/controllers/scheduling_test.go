package controllers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

// wlSchedulerEvent waits for an event with reason about pod from the
// scheduler and returns it.
func wlSchedulerEvent(t testing.TB, cs kubernetes.Interface, ns, pod, reason string, timeout time.Duration) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	waitFor(t, timeout, reason+" event for pod "+pod, func() (bool, error) {
		l, err := cs.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i, e := range l.Items {
			if e.Regarding.Kind == "Pod" && e.Regarding.Name == pod && e.Reason == reason {
				found = &l.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if found.ReportingController != "default-scheduler" {
		t.Fatalf("%s event for %s reported by %q, want default-scheduler", reason, pod, found.ReportingController)
	}
	return found
}

// wlFailedScheduling waits for the pod's FailedScheduling event, checks the
// upstream message frame and returns the message.
func wlFailedScheduling(t testing.TB, cs kubernetes.Interface, ns, pod string) string {
	t.Helper()
	e := wlSchedulerEvent(t, cs, ns, pod, "FailedScheduling", 60*time.Second)
	if e.Type != v1.EventTypeWarning {
		t.Fatalf("FailedScheduling event of type %s", e.Type)
	}
	if !regexp.MustCompile(`^0/\d+ nodes are available: `).MatchString(e.Note) {
		t.Fatalf("FailedScheduling message does not start with \"0/N nodes are available: \": %q", e.Note)
	}
	waitFor(t, 30*time.Second, "pod "+pod+" PodScheduled=False/Unschedulable", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != "" {
			return false, fmt.Errorf("pod %s was bound to %s", pod, p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled {
				return c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable, nil
			}
		}
		return false, nil
	})
	return e.Note
}

// wlCount extracts N from "N <reason>" in a FailedScheduling message.
func wlCount(t testing.TB, msg, reason string) int {
	t.Helper()
	m := regexp.MustCompile(`(\d+) ` + regexp.QuoteMeta(reason)).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("message has no \"N %s\": %q", reason, msg)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// wlPod is a pod manifest pinned to a pool; cpu (if set) is its request,
// extra is appended to its spec.
func wlPod(name, poolName, cpu, extra string) string {
	res := ""
	if cpu != "" {
		res = fmt.Sprintf("\n    resources: {requests: {cpu: %q}}", cpu)
	}
	return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: %s}}
spec:
  nodeSelector: {pool: %s}
  containers:
  - name: c
    image: %s%s
%s`, name, name, poolName, wlImage, res, extra)
}

func wlWaitScheduled(t testing.TB, cs kubernetes.Interface, ns, pod string) *v1.Pod {
	t.Helper()
	var p *v1.Pod
	waitFor(t, 60*time.Second, "pod "+pod+" Running", func() (bool, error) {
		var err error
		p, err = cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
		return err == nil && wlReady(p), err
	})
	return p
}

func TestSchedulingInsufficientCPU(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	wlApply(t, ns, wlPod("huge", poolName, "1000", ""))
	msg := wlFailedScheduling(t, cs, ns, "huge")
	// Both pool nodes fail the resource fit; every other node fails the
	// pool selector (or a taint), so the counts of those vary.
	if n := wlCount(t, msg, "Insufficient cpu"); n != 2 {
		t.Fatalf("%d nodes with Insufficient cpu, want the 2 pool nodes: %q", n, msg)
	}
	// No node could ever hold 1000 CPUs, so preemption cannot help.
	mustContain(t, msg, "preemption: 0/", "Preemption is not helpful for scheduling")

	// A pod that fits schedules on the same pool.
	wlApply(t, ns, wlPod("small", poolName, "1", ""))
	p := wlWaitScheduled(t, cs, ns, "small")
	if !strings.HasPrefix(p.Spec.NodeName, poolName) {
		t.Fatalf("small pod on %q, not in pool %s", p.Spec.NodeName, poolName)
	}
}

// smallNode is a pool of one node with cpu CPUs, 4Gi of memory and room
// for 110 pods.
func smallNode(t *testing.T, cpu string) (*nodesim.Sim, string) {
	t.Helper()
	return pool(t, 1, nodesim.Config{Capacity: v1.ResourceList{
		v1.ResourceCPU:    resource.MustParse(cpu),
		v1.ResourceMemory: resource.MustParse("4Gi"),
		v1.ResourcePods:   resource.MustParse("110"),
	}})
}

// TestSchedulingTerminalPodsFreeResources: a pod that has finished
// (Succeeded or Failed) holds nothing on its node, as upstream's scheduler
// sees it. Skiff's scheduler shares the controller manager's pod informer,
// which keeps finished pods, through a view that leaves them out
// (server/informerpool); without that view the third pod below would
// find the node's CPU taken.
func TestSchedulingTerminalPodsFreeResources(t *testing.T) {
	t.Parallel()
	_, poolName := smallNode(t, "2")
	ns := namespace(t)
	cs := admin(t)
	for _, tc := range []struct {
		name, exit string
		phase      v1.PodPhase
	}{
		{"succeeds", "0", v1.PodSucceeded},
		{"fails", "1", v1.PodFailed},
	} {
		// Each takes the node's whole CPU while it runs.
		wlApply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations: {%s: "1", %s: %q}
spec:
  restartPolicy: Never
  nodeSelector: {pool: %s}
  containers:
  - name: c
    image: %s
    resources: {requests: {cpu: "2"}}
`, tc.name, nodesim.AnnotationRunSeconds, nodesim.AnnotationExitCode, tc.exit, poolName, wlImage))
		waitFor(t, 60*time.Second, "pod "+tc.name+" "+string(tc.phase), func() (bool, error) {
			p, err := cs.CoreV1().Pods(ns).Get(context.Background(), tc.name, metav1.GetOptions{})
			return err == nil && p.Status.Phase == tc.phase, err
		})
	}
	wlApply(t, ns, wlPod("next", poolName, "2", ""))
	if p := wlWaitScheduled(t, cs, ns, "next"); !strings.HasPrefix(p.Spec.NodeName, poolName) {
		t.Fatalf("pod next on %q, not in pool %s", p.Spec.NodeName, poolName)
	}
}

func TestSchedulingTaints(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{Taints: []v1.Taint{{Key: "dedicated", Value: "gpu", Effect: v1.TaintEffectNoSchedule}}})
	ns := namespace(t)
	cs := admin(t)
	wlApply(t, ns, wlPod("intolerant", poolName, "", ""))
	msg := wlFailedScheduling(t, cs, ns, "intolerant")
	mustContain(t, msg, "untolerated taint")
	// Other tests' nodes may be tainted as well; ours must be among them.
	if n := wlCount(t, msg, "node(s) had untolerated taint"); n < 2 {
		t.Fatalf("%d nodes with untolerated taints, want at least the 2 pool nodes: %q", n, msg)
	}
	if strings.Contains(msg, "Insufficient") {
		t.Fatalf("unexpected resource reason: %q", msg)
	}

	wlApply(t, ns, wlPod("tolerant", poolName, "", `
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]`))
	p := wlWaitScheduled(t, cs, ns, "tolerant")
	if !strings.HasPrefix(p.Spec.NodeName, poolName) {
		t.Fatalf("tolerant pod on %q, not in pool %s", p.Spec.NodeName, poolName)
	}
	// The intolerant one still waits.
	if p, err := cs.CoreV1().Pods(ns).Get(context.Background(), "intolerant", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		t.Fatalf("intolerant pod bound to %q (%v)", p.Spec.NodeName, err)
	}
}

func TestSchedulingNodeAffinity(t *testing.T) {
	t.Parallel()
	sim, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)

	// Required affinity no node satisfies.
	wlApply(t, ns, wlPod("nowhere", poolName, "", `
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: disk, operator: In, values: [ssd]}]`))
	msg := wlFailedScheduling(t, cs, ns, "nowhere")
	mustContain(t, msg, "didn't match Pod's node affinity/selector")
	if wlCount(t, msg, "node(s) didn't match Pod's node affinity/selector") < 3 {
		t.Fatalf("fewer nodes than the pool failed the affinity: %q", msg)
	}

	// Labelling a node to match lets it schedule there.
	nodes := sim.NodeNames()
	kubectl(t, "label", "node", nodes[1], "disk=ssd")
	if p := wlWaitScheduled(t, cs, ns, "nowhere"); p.Spec.NodeName != nodes[1] {
		t.Fatalf("pod with required affinity disk=ssd on %s, want %s", p.Spec.NodeName, nodes[1])
	}

	// Preferred affinity: independent pods (no spreading among them) all
	// go to the preferred node, though the others are emptier.
	kubectl(t, "label", "node", nodes[2], "tier=gold")
	var manifests []string
	for i := range 3 {
		manifests = append(manifests, wlPod(fmt.Sprintf("pref%d", i), poolName, "", `
  affinity:
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        preference:
          matchExpressions: [{key: tier, operator: In, values: [gold]}]`))
	}
	wlApply(t, ns, strings.Join(manifests, "\n---\n"))
	for i := range 3 {
		if p := wlWaitScheduled(t, cs, ns, fmt.Sprintf("pref%d", i)); p.Spec.NodeName != nodes[2] {
			t.Errorf("pod %s on %s, want the preferred node %s", p.Name, p.Spec.NodeName, nodes[2])
		}
	}
}

func TestSchedulingPodAntiAffinity(t *testing.T) {
	t.Parallel()
	sim, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	wlApply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 3
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      nodeSelector: {pool: %s}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: spread}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: %s}]
`, poolName, wlImage))
	pods := wlWaitPods(t, cs, ns, "app=spread", 60*time.Second, "3 ready replicas", wlAllReady(3))
	var nodes []string
	for _, p := range pods {
		nodes = append(nodes, p.Spec.NodeName)
	}
	sort.Strings(nodes)
	if !slices.Equal(nodes, sim.NodeNames()) {
		t.Fatalf("replicas on %v, want one on each of %v", nodes, sim.NodeNames())
	}

	// A fourth replica has nowhere to go.
	kubectl(t, "scale", "deployment/spread", "-n", ns, "--replicas=4")
	var pending string
	wlWaitPods(t, cs, ns, "app=spread", 30*time.Second, "a fourth replica", func(pods []v1.Pod) bool {
		for _, p := range pods {
			if p.Spec.NodeName == "" {
				pending = p.Name
			}
		}
		return len(pods) == 4 && pending != ""
	})
	msg := wlFailedScheduling(t, cs, ns, pending)
	if n := wlCount(t, msg, "node(s) didn't match pod anti-affinity rules"); n != 3 {
		t.Fatalf("%d nodes failed the anti-affinity, want the 3 pool nodes: %q", n, msg)
	}
}

func TestSchedulingPreemption(t *testing.T) {
	t.Parallel()
	sim, poolName := smallNode(t, "1")
	ns := namespace(t)
	cs := admin(t)
	low, high := ns+"-low", ns+"-high"
	kubectlIn(t, fmt.Sprintf(`
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: %s}
value: 100
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: %s}
value: 1000000
`, low, high), "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "priorityclass", low, high, "--wait=false") })

	rec := wlWatchPods(t, cs, ns, "app=victim")
	wlApply(t, ns, wlPod("victim", poolName, "800m", "  priorityClassName: "+low))
	victim := wlWaitScheduled(t, cs, ns, "victim")

	// A second low-priority pod does not fit and cannot preempt its peer.
	wlApply(t, ns, wlPod("peer", poolName, "800m", "  priorityClassName: "+low))
	msg := wlFailedScheduling(t, cs, ns, "peer")
	if n := wlCount(t, msg, "Insufficient cpu"); n != 1 {
		t.Fatalf("%d nodes with Insufficient cpu, want 1: %q", n, msg)
	}

	wlApply(t, ns, wlPod("preemptor", poolName, "800m", "  priorityClassName: "+high))
	p := wlWaitScheduled(t, cs, ns, "preemptor")
	if node := sim.NodeNames()[0]; p.Spec.NodeName != node {
		t.Fatalf("preemptor on %q, want %s", p.Spec.NodeName, node)
	}
	if _, err := cs.CoreV1().Pods(ns).Get(context.Background(), "victim", metav1.GetOptions{}); err == nil {
		t.Fatalf("victim still exists with the preemptor running")
	}
	e := wlSchedulerEvent(t, cs, ns, "victim", "Preempted", 30*time.Second)
	mustContain(t, e.Note, fmt.Sprintf("Preempted by pod %s on node %s", p.UID, p.Spec.NodeName))
	// The victim was marked as a disruption target before it went.
	var marked bool
	for _, ev := range rec.Events() {
		if ev.Pod.UID != victim.UID {
			continue
		}
		for _, c := range ev.Pod.Status.Conditions {
			if c.Type == v1.DisruptionTarget && c.Status == v1.ConditionTrue && c.Reason == v1.PodReasonPreemptionByScheduler {
				marked = true
			}
		}
	}
	if !marked {
		t.Fatalf("victim never had the DisruptionTarget condition (PreemptionByScheduler)")
	}
	// The low-priority peer still waits.
	if peer, err := cs.CoreV1().Pods(ns).Get(context.Background(), "peer", metav1.GetOptions{}); err != nil || peer.Spec.NodeName != "" {
		t.Fatalf("peer bound to %q (%v)", peer.Spec.NodeName, err)
	}
}
