package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

func deploymentYAML(name, pool, image string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: %[4]d
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      nodeSelector: {pool: %[2]s}
      containers:
      - name: web
        image: %[3]s
        resources: {requests: {cpu: 100m, memory: 64Mi}}
`, name, pool, image, replicas)
}

// podHistory watches the pods and ReplicaSets of a Deployment and checks
// the rolling-update bounds after every event, in the order the API
// delivered them: the ReplicaSets' desired replicas never exceed
// replicas+maxSurge (the bound the Deployment controller enforces; pods
// themselves may briefly outnumber it while an old ReplicaSet's scaled-down
// pods are still being deleted), and ready pods never drop below
// replicas-maxUnavailable.
type podHistory struct {
	mu         sync.Mutex
	pods       map[string]*v1.Pod
	rsReplicas map[string]int32
	maxTotal   int
	minReady   int
	violations []string
	checking   bool
}

func ready(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func (h *podHistory) counts() (desired, readyN int) {
	for _, r := range h.rsReplicas {
		desired += int(r)
	}
	for _, p := range h.pods {
		if p.DeletionTimestamp == nil && ready(p) {
			readyN++
		}
	}
	return
}

func (h *podHistory) checkLocked(rv string) {
	if !h.checking {
		return
	}
	desired, r := h.counts()
	if desired > h.maxTotal {
		h.violations = append(h.violations, fmt.Sprintf("rv %s: ReplicaSets want %d pods > %d (maxSurge)", rv, desired, h.maxTotal))
	}
	if r < h.minReady {
		h.violations = append(h.violations, fmt.Sprintf("rv %s: %d ready < %d (maxUnavailable)", rv, r, h.minReady))
	}
}

func watchPods(t *testing.T, ns, selector string, maxTotal, minReady int) *podHistory {
	t.Helper()
	h := &podHistory{pods: map[string]*v1.Pod{}, rsReplicas: map[string]int32{}, maxTotal: maxTotal, minReady: minReady}
	cs := admin(t)
	rss, err := cs.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss.Items {
		h.rsReplicas[string(rs.UID)] = *rs.Spec.Replicas
	}
	list, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		h.pods[string(list.Items[i].UID)] = &list.Items[i]
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*v1.Pod)
			if !ok {
				continue
			}
			h.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(h.pods, string(p.UID))
			} else {
				h.pods[string(p.UID)] = p
			}
			h.checkLocked(p.ResourceVersion)
			h.mu.Unlock()
		}
	}()
	rw, err := cs.AppsV1().ReplicaSets(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rss.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	rsDone := make(chan struct{})
	go func() {
		defer close(rsDone)
		for ev := range rw.ResultChan() {
			rs, ok := ev.Object.(*appsv1.ReplicaSet)
			if !ok {
				continue
			}
			h.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(h.rsReplicas, string(rs.UID))
			} else {
				h.rsReplicas[string(rs.UID)] = *rs.Spec.Replicas
			}
			h.checkLocked(rs.ResourceVersion)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); rw.Stop(); <-done; <-rsDone })
	return h
}

func (h *podHistory) check(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checking = on
}

func (h *podHistory) failures() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.violations...)
}

func TestDeploymentRollout(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	kubectlIn(t, deploymentYAML("web", poolName, "registry.local/web:1.0", 4), "apply", "-n", ns, "-f", "-")
	mustContain(t, kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s"), `deployment "web" successfully rolled out`)

	// From here on every rollout must respect maxSurge=1/maxUnavailable=1
	// for 4 replicas: at most 5 pods, at least 3 ready, at every event.
	h := watchPods(t, ns, "app=web", 5, 3)
	h.check(true)

	kubectl(t, "set", "image", "-n", ns, "deploy/web", "web=registry.local/web:2.0")
	mustContain(t, kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s"), "successfully rolled out")
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Annotations["deployment.kubernetes.io/revision"]; got != "2" {
		t.Fatalf("revision annotation %q, want 2", got)
	}
	hist := kubectl(t, "rollout", "history", "-n", ns, "deploy/web")
	mustContain(t, hist, "REVISION", "1 ", "2 ")

	kubectl(t, "rollout", "undo", "-n", ns, "deploy/web")
	mustContain(t, kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s"), "successfully rolled out")
	img := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
	if img != "registry.local/web:1.0 3" {
		t.Fatalf("after undo: image and revision %q, want registry.local/web:1.0 3", img)
	}

	// Pause: template changes make no new ReplicaSet until resumed.
	kubectl(t, "rollout", "pause", "-n", ns, "deploy/web")
	kubectl(t, "set", "image", "-n", ns, "deploy/web", "web=registry.local/web:3.0")
	time.Sleep(2 * time.Second)
	rss, err := cs.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss.Items {
		if rs.Spec.Template.Spec.Containers[0].Image == "registry.local/web:3.0" {
			t.Fatalf("paused deployment created ReplicaSet %s", rs.Name)
		}
	}
	kubectl(t, "rollout", "resume", "-n", ns, "deploy/web")
	mustContain(t, kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s"), "successfully rolled out")
	kubectl(t, "rollout", "restart", "-n", ns, "deploy/web")
	mustContain(t, kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s"), "successfully rolled out")
	h.check(false)
	if v := h.failures(); len(v) > 0 {
		t.Fatalf("rolling update violated its bounds:\n%s", strings.Join(v, "\n"))
	}

	kubectl(t, "scale", "-n", ns, "deploy/web", "--replicas=6")
	waitFor(t, 60*time.Second, "6 ready replicas", func() (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ObservedGeneration == d.Generation && d.Status.ReadyReplicas == 6 && d.Status.AvailableReplicas == 6 && d.Status.UpdatedReplicas == 6, nil
	})
	d, _ = cs.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	conds := map[appsv1.DeploymentConditionType]appsv1.DeploymentCondition{}
	for _, c := range d.Status.Conditions {
		conds[c.Type] = c
	}
	if c := conds[appsv1.DeploymentAvailable]; c.Status != v1.ConditionTrue || c.Reason != "MinimumReplicasAvailable" {
		t.Fatalf("Available condition %+v", c)
	}
	if c := conds[appsv1.DeploymentProgressing]; c.Status != v1.ConditionTrue || c.Reason != "NewReplicaSetAvailable" {
		t.Fatalf("Progressing condition %+v", c)
	}
	// revisionHistoryLimit keeps old ReplicaSets bounded; all pods carry
	// ownerReferences to the current ReplicaSet.
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Kind != "ReplicaSet" || p.Spec.NodeName == "" {
			t.Fatalf("pod %s: owners %+v node %q", p.Name, p.OwnerReferences, p.Spec.NodeName)
		}
	}
	events := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=Deployment", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}")
	mustContain(t, events, "ScalingReplicaSet")
}

func TestDeletePropagation(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()
	for _, name := range []string{"orphan", "fg", "bg"} {
		kubectlIn(t, deploymentYAML(name, poolName, "registry.local/web:1.0", 2), "apply", "-n", ns, "-f", "-")
	}
	for _, name := range []string{"orphan", "fg", "bg"} {
		kubectl(t, "rollout", "status", "-n", ns, "deploy/"+name, "--timeout=90s")
	}
	podsOf := func(app string) int {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		return len(pods.Items)
	}
	rsOf := func(app string) []appsv1.ReplicaSet {
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		return rss.Items
	}

	// Orphan: the ReplicaSet and its pods stay, without the owner reference.
	kubectl(t, "delete", "-n", ns, "deploy/orphan", "--cascade=orphan")
	waitFor(t, 30*time.Second, "orphaned ReplicaSet released", func() (bool, error) {
		rss := rsOf("orphan")
		return len(rss) == 1 && len(rss[0].OwnerReferences) == 0, nil
	})
	if n := podsOf("orphan"); n != 2 {
		t.Fatalf("orphan: %d pods left, want 2", n)
	}

	// Foreground: kubectl waits until the dependents are gone first.
	kubectl(t, "delete", "-n", ns, "deploy/fg", "--cascade=foreground", "--timeout=60s")
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "fg", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("foreground: deployment still there after delete returned: %v", err)
	}
	if rss, n := rsOf("fg"), podsOf("fg"); len(rss) != 0 || n != 0 {
		t.Fatalf("foreground: %d ReplicaSets and %d pods remain after the owner is gone", len(rss), n)
	}

	// Background (default): the owner goes at once, dependents after.
	kubectl(t, "delete", "-n", ns, "deploy/bg")
	waitFor(t, 60*time.Second, "background cascade", func() (bool, error) {
		return len(rsOf("bg")) == 0 && podsOf("bg") == 0, nil
	})
}

func TestNamespaceDeletionRemovesEverything(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 1, nodesim.Config{})
	crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.ctl.skiff.dev}
spec:
  group: ctl.skiff.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`
	kubectlIn(t, crd, "apply", "-f", "-")
	kubectl(t, "wait", "--for=condition=Established", "crd/gadgets.ctl.skiff.dev", "--timeout=30s")
	ns := testName(t, 40)
	kubectl(t, "create", "namespace", ns)
	waitFor(t, 30*time.Second, "gadget resource served", func() (bool, error) {
		_, _, err := shared.Kubectl(t, "", "get", "gadgets", "-n", ns)
		return err == nil, nil
	})
	kubectlIn(t, "apiVersion: ctl.skiff.dev/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n", "apply", "-n", ns, "-f", "-")
	kubectlIn(t, deploymentYAML("web", poolName, "registry.local/web:1.0", 2), "apply", "-n", ns, "-f", "-")
	kubectl(t, "create", "configmap", "cm", "-n", ns, "--from-literal=a=b")
	kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=90s")

	kubectl(t, "delete", "namespace", ns, "--timeout=120s")
	if out, _, err := shared.Kubectl(t, "", "get", "namespace", ns); err == nil {
		t.Fatalf("namespace still present after delete --wait:\n%s", out)
	}
	// Recreated, it starts empty: nothing of the old contents survived.
	kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "namespace", ns, "--wait=false") })
	for _, kind := range []string{"gadgets", "deployments", "replicasets", "pods", "configmaps/cm"} {
		out, errOut, err := shared.Kubectl(t, "", "get", kind, "-n", ns, "-o", "name")
		if kind == "configmaps/cm" {
			if err == nil {
				t.Fatalf("configmap cm survived namespace deletion")
			}
			continue
		}
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("%s after namespace re-creation: %q %s %v", kind, out, errOut, err)
		}
	}
}
