package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

// Helpers of the workload and scheduling tests carry a "wl" prefix so they
// cannot collide with the harness's.

const (
	wlImage  = "registry.k8s.io/pause:3.10"
	wlImage2 = "registry.k8s.io/pause:3.9"
)

// wlPods lists the pods in ns matching a label selector.
func wlPods(t testing.TB, cs kubernetes.Interface, ns, selector string) []v1.Pod {
	t.Helper()
	l, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("list pods %s in %s: %v", selector, ns, err)
	}
	return l.Items
}

// wlWaitPods waits until cond holds for the pods matching selector and
// returns them.
func wlWaitPods(t testing.TB, cs kubernetes.Interface, ns, selector string, timeout time.Duration, what string, cond func([]v1.Pod) bool) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	waitFor(t, timeout, what, func() (bool, error) {
		l, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		pods = l.Items
		return cond(pods), nil
	})
	return pods
}

// wlReady: Running with the Ready condition true, not being deleted.
func wlReady(p *v1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != v1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func wlAllReady(n int) func([]v1.Pod) bool {
	return func(pods []v1.Pod) bool {
		if len(pods) != n {
			return false
		}
		for i := range pods {
			if !wlReady(&pods[i]) {
				return false
			}
		}
		return true
	}
}

func wlDescribe(pods []v1.Pod) string {
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "  %s node=%q phase=%s deleting=%v image=%s\n", p.Name, p.Spec.NodeName, p.Status.Phase,
			p.DeletionTimestamp != nil, p.Spec.Containers[0].Image)
	}
	return b.String()
}

// wlEvent is one observed watch event.
type wlEvent struct {
	Type watch.EventType
	Pod  *v1.Pod
}

// wlRecorder records the watch events of the pods in a namespace.
type wlRecorder struct {
	mu     sync.Mutex
	events []wlEvent
}

func (r *wlRecorder) Events() []wlEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wlWatchPods records pod events in ns (matching selector) from now until
// the test ends. The watch resumes after disconnections.
func wlWatchPods(t *testing.T, cs kubernetes.Interface, ns, selector string) *wlRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pods := cs.CoreV1().Pods(ns)
	l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, l.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return pods.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &wlRecorder{}
	for i := range l.Items {
		r.events = append(r.events, wlEvent{watch.Added, &l.Items[i]})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range rw.ResultChan() {
			if p, ok := ev.Object.(*v1.Pod); ok {
				r.mu.Lock()
				r.events = append(r.events, wlEvent{ev.Type, p})
				r.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { rw.Stop(); cancel(); <-done })
	return r
}

// wlApply applies a manifest in ns.
func wlApply(t testing.TB, ns, manifest string) {
	t.Helper()
	kubectlIn(t, manifest, "apply", "-n", ns, "-f", "-")
}

// --- DaemonSet ----------------------------------------------------------

func TestDaemonSetTaintsAndRollingUpdate(t *testing.T) {
	t.Parallel()
	sim, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	nodes := sim.NodeNames()
	wlApply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {pool: %s}
      containers: [{name: c, image: %s}]
`, poolName, wlImage))

	onePerNode := func(want []string) func([]v1.Pod) bool {
		return func(pods []v1.Pod) bool {
			var got []string
			for i := range pods {
				if !wlReady(&pods[i]) {
					return false
				}
				got = append(got, pods[i].Spec.NodeName)
			}
			sort.Strings(got)
			return slices.Equal(got, want)
		}
	}
	pods := wlWaitPods(t, cs, ns, "app=agent", 60*time.Second, "3 DaemonSet pods Running, one per node", onePerNode(nodes))
	byNode := map[string]v1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
	}
	waitFor(t, 30*time.Second, "DaemonSet status 3/3 ready", func() (bool, error) {
		ds, err := cs.AppsV1().DaemonSets(ns).Get(context.Background(), "agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := ds.Status
		return s.DesiredNumberScheduled == 3 && s.CurrentNumberScheduled == 3 && s.NumberReady == 3 && s.NumberAvailable == 3, nil
	})

	// A NoExecute taint the pods do not tolerate evicts the pod on that
	// node; the DaemonSet does not put it back while the taint stays.
	tainted := nodes[0]
	kubectl(t, "taint", "node", tainted, "skiff-test=evict:NoExecute")
	rest := nodes[1:]
	wlWaitPods(t, cs, ns, "app=agent", 60*time.Second, "DaemonSet pod gone from the tainted node", func(pods []v1.Pod) bool {
		var got []string
		for _, p := range pods {
			got = append(got, p.Spec.NodeName)
		}
		sort.Strings(got)
		return slices.Equal(got, rest)
	})
	waitFor(t, 30*time.Second, "DaemonSet desires 2 pods", func() (bool, error) {
		ds, err := cs.AppsV1().DaemonSets(ns).Get(context.Background(), "agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return ds.Status.DesiredNumberScheduled == 2 && ds.Status.NumberReady == 2, nil
	})
	// Stays gone; the other pods are untouched.
	time.Sleep(3 * time.Second)
	pods = wlPods(t, cs, ns, "app=agent")
	if len(pods) != 2 {
		t.Fatalf("want 2 DaemonSet pods while %s is tainted, got:\n%s", tainted, wlDescribe(pods))
	}
	for _, p := range pods {
		if p.Spec.NodeName == tainted {
			t.Fatalf("DaemonSet pod recreated on tainted node %s:\n%s", tainted, wlDescribe(pods))
		}
		if old := byNode[p.Spec.NodeName]; old.UID != p.UID || !wlReady(&p) {
			t.Fatalf("pod on untainted node %s was replaced or is not ready:\n%s", p.Spec.NodeName, wlDescribe(pods))
		}
	}

	// Removing the taint brings the pod back.
	kubectl(t, "taint", "node", tainted, "skiff-test=evict:NoExecute-")
	wlWaitPods(t, cs, ns, "app=agent", 60*time.Second, "DaemonSet pod back on the untainted node", onePerNode(nodes))

	// Rolling update of the image.
	kubectl(t, "set", "image", "-n", ns, "daemonset/agent", "c="+wlImage2)
	out := kubectl(t, "rollout", "status", "-n", ns, "daemonset/agent", "--timeout=120s")
	mustContain(t, out, `daemon set "agent" successfully rolled out`)
	pods = wlWaitPods(t, cs, ns, "app=agent", 30*time.Second, "3 updated DaemonSet pods", onePerNode(nodes))
	for _, p := range pods {
		if img := p.Spec.Containers[0].Image; img != wlImage2 {
			t.Fatalf("pod %s on %s has image %s after the rollout, want %s", p.Name, p.Spec.NodeName, img, wlImage2)
		}
	}
	ds, err := cs.AppsV1().DaemonSets(ns).Get(context.Background(), "agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := ds.Status; s.UpdatedNumberScheduled != 3 || s.NumberAvailable != 3 || s.ObservedGeneration != ds.Generation {
		t.Fatalf("DaemonSet status after rollout: %+v", s)
	}
}

// --- StatefulSet --------------------------------------------------------

func TestStatefulSetOrderedWithVolumes(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()

	// Static volumes of a class only this test uses, so no other claim
	// can take them.
	class := ns + "-local"
	kubectlIn(t, fmt.Sprintf(`
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: %s}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
`, class), "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "storageclass", class, "--wait=false") })
	var pvs strings.Builder
	for i := range 3 {
		fmt.Fprintf(&pvs, `---
apiVersion: v1
kind: PersistentVolume
metadata: {name: %[1]s-pv%[2]d, labels: {test: %[1]s}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: %[3]s
  hostPath: {path: /tmp/%[1]s/%[2]d}
`, ns, i, class)
	}
	kubectlIn(t, pvs.String(), "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "pv", "-l", "test="+ns, "--wait=false") })

	rec := wlWatchPods(t, cs, ns, "app=web")
	wlApply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  podManagementPolicy: OrderedReady
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {pool: %s}
      containers: [{name: c, image: %s}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: %s
      resources: {requests: {storage: 1Gi}}
`, poolName, wlImage, class))

	pods := wlWaitPods(t, cs, ns, "app=web", 90*time.Second, "3 StatefulSet pods ready", wlAllReady(3))
	waitFor(t, 30*time.Second, "StatefulSet 3 ready replicas", func() (bool, error) {
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && s.Status.ReadyReplicas == 3 && s.Status.AvailableReplicas == 3, err
	})

	// Creation order: web-0, web-1, web-2, each only once its predecessor
	// was Running and Ready.
	latest := map[string]*v1.Pod{}
	var created []string
	for _, ev := range rec.Events() {
		name := ev.Pod.Name
		if ev.Type == watch.Added {
			created = append(created, name)
			var ord int
			if _, err := fmt.Sscanf(name, "web-%d", &ord); err != nil {
				t.Fatalf("unexpected pod %s", name)
			}
			if ord > 0 {
				prev := latest[fmt.Sprintf("web-%d", ord-1)]
				if prev == nil || !wlReady(prev) {
					t.Errorf("%s was created before web-%d was Running and Ready (last seen: %+v)", name, ord-1, prev)
				}
			}
		}
		latest[name] = ev.Pod
	}
	if want := []string{"web-0", "web-1", "web-2"}; !slices.Equal(created, want) {
		t.Fatalf("pods created in order %v, want %v", created, want)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for i := 1; i < len(pods); i++ {
		if pods[i].CreationTimestamp.Before(&pods[i-1].CreationTimestamp) {
			t.Errorf("%s created at %s, before %s at %s", pods[i].Name, pods[i].CreationTimestamp, pods[i-1].Name, pods[i-1].CreationTimestamp)
		}
	}

	// One claim per pod from the template, each Bound to one of our
	// static volumes.
	checkClaims := func() {
		t.Helper()
		pvcs, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		volumes := map[string]bool{}
		for _, c := range pvcs.Items {
			names = append(names, c.Name)
			if c.Status.Phase != v1.ClaimBound || !strings.HasPrefix(c.Spec.VolumeName, ns+"-pv") {
				t.Errorf("claim %s: phase %s, volume %q", c.Name, c.Status.Phase, c.Spec.VolumeName)
			}
			volumes[c.Spec.VolumeName] = true
		}
		sort.Strings(names)
		if want := []string{"data-web-0", "data-web-1", "data-web-2"}; !slices.Equal(names, want) || len(volumes) != 3 {
			t.Fatalf("claims %v on volumes %v, want %v on 3 distinct volumes", names, volumes, want)
		}
	}
	waitFor(t, 30*time.Second, "3 claims Bound", func() (bool, error) {
		pvcs, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pvcs.Items) != 3 {
			return false, err
		}
		for _, c := range pvcs.Items {
			if c.Status.Phase != v1.ClaimBound {
				return false, nil
			}
		}
		return true, nil
	})
	checkClaims()
	for _, p := range pods {
		var claim string
		for _, vol := range p.Spec.Volumes {
			if vol.PersistentVolumeClaim != nil {
				claim = vol.PersistentVolumeClaim.ClaimName
			}
		}
		if claim != "data-"+p.Name {
			t.Errorf("pod %s mounts claim %q, want data-%s", p.Name, claim, p.Name)
		}
	}
	uid := map[string]string{}
	for _, p := range pods {
		uid[p.Name] = string(p.UID)
	}

	// Partitioned rolling update: only ordinals >= 2 get the new image.
	kubectl(t, "patch", "statefulset", "web", "-n", ns, "--type=merge",
		"-p", `{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}`)
	kubectl(t, "set", "image", "-n", ns, "statefulset/web", "c="+wlImage2)
	out := kubectl(t, "rollout", "status", "-n", ns, "statefulset/web", "--timeout=120s")
	mustContain(t, out, "partitioned roll out complete: 1 new pods have been updated")
	sts, err := cs.AppsV1().StatefulSets(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sts.Status.UpdatedReplicas != 1 || sts.Status.CurrentRevision == sts.Status.UpdateRevision {
		t.Fatalf("after partitioned update: updatedReplicas=%d currentRevision=%s updateRevision=%s",
			sts.Status.UpdatedReplicas, sts.Status.CurrentRevision, sts.Status.UpdateRevision)
	}
	pods = wlWaitPods(t, cs, ns, "app=web", 30*time.Second, "3 ready pods after partitioned update", wlAllReady(3))
	for _, p := range pods {
		img, rev := p.Spec.Containers[0].Image, p.Labels[appsv1.ControllerRevisionHashLabelKey]
		switch p.Name {
		case "web-2":
			if img != wlImage2 || rev != sts.Status.UpdateRevision || string(p.UID) == uid[p.Name] {
				t.Errorf("web-2 not updated: image %s revision %s (update revision %s)", img, rev, sts.Status.UpdateRevision)
			}
		default:
			if img != wlImage || rev != sts.Status.CurrentRevision || string(p.UID) != uid[p.Name] {
				t.Errorf("%s below the partition was touched: image %s revision %s uid changed %v", p.Name, img, rev, string(p.UID) != uid[p.Name])
			}
		}
	}

	// Scale down to 1: web-2 goes first, then web-1; the claims stay.
	kubectl(t, "scale", "statefulset/web", "-n", ns, "--replicas=1")
	wlWaitPods(t, cs, ns, "app=web", 60*time.Second, "only web-0 left", func(pods []v1.Pod) bool {
		return len(pods) == 1 && pods[0].Name == "web-0" && wlReady(&pods[0])
	})
	events := rec.Events()
	firstDeleting := map[string]int{}
	gone := map[string]int{}
	for i, ev := range events {
		n := ev.Pod.Name
		if _, ok := firstDeleting[n]; !ok && (ev.Pod.DeletionTimestamp != nil || ev.Type == watch.Deleted) {
			firstDeleting[n] = i
		}
		if ev.Type == watch.Deleted {
			gone[n] = i
		}
	}
	// The partitioned update deleted the first web-2 too; look at the
	// scale-down's deletions only: the last ones of each name.
	d2, ok2 := gone["web-2"]
	d1, ok1 := firstDeleting["web-1"]
	if !ok1 || !ok2 {
		t.Fatalf("missing deletion events: web-2 deleted %v, web-1 deleting %v", ok2, ok1)
	}
	if d1 < d2 {
		t.Errorf("web-1 was deleted (event %d) before web-2 was gone (event %d)", d1, d2)
	}
	if _, ok := firstDeleting["web-0"]; ok {
		t.Errorf("web-0 was deleted")
	}
	checkClaims()
}

// --- Job ----------------------------------------------------------------

func TestJobs(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()

	job := func(name, extraSpec, annotations string) string {
		return fmt.Sprintf(`
apiVersion: batch/v1
kind: Job
metadata: {name: %s}
spec:
%s
  template:
    metadata:
      annotations: {%s}
    spec:
      restartPolicy: Never
      nodeSelector: {pool: %s}
      containers: [{name: c, image: %s}]
`, name, extraSpec, annotations, poolName, wlImage)
	}
	waitJob := func(t *testing.T, name string, cond batchv1.JobConditionType, timeout time.Duration) *batchv1.Job {
		t.Helper()
		var j *batchv1.Job
		waitFor(t, timeout, "job "+name+" "+string(cond), func() (bool, error) {
			var err error
			if j, err = cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				return false, err
			}
			for _, c := range j.Status.Conditions {
				if c.Type == cond && c.Status == v1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		return j
	}
	phases := func(t *testing.T, name string) map[v1.PodPhase]int {
		t.Helper()
		m := map[v1.PodPhase]int{}
		for _, p := range wlPods(t, cs, ns, batchv1.JobNameLabel+"="+name) {
			m[p.Status.Phase]++
		}
		return m
	}

	t.Run("completions", func(t *testing.T) {
		t.Parallel()
		rec := wlWatchPods(t, cs, ns, batchv1.JobNameLabel+"=three")
		wlApply(t, ns, job("three", "  completions: 3\n  parallelism: 2", `nodesim.skiff.dev/run-seconds: "2"`))
		j := waitJob(t, "three", batchv1.JobComplete, 90*time.Second)
		if j.Status.Succeeded != 3 || j.Status.Failed != 0 {
			t.Fatalf("job status: succeeded=%d failed=%d, want 3/0", j.Status.Succeeded, j.Status.Failed)
		}
		if got := phases(t, "three"); got[v1.PodSucceeded] != 3 || len(got) != 1 {
			t.Fatalf("pod phases %v, want 3 Succeeded", got)
		}
		// Never more than `parallelism` pods at once (and 2 at first).
		active := map[string]bool{}
		most := 0
		for _, ev := range rec.Events() {
			p := ev.Pod
			active[p.Name] = ev.Type != watch.Deleted && p.Status.Phase != v1.PodSucceeded && p.Status.Phase != v1.PodFailed
			n := 0
			for _, a := range active {
				if a {
					n++
				}
			}
			most = max(most, n)
		}
		if most != 2 {
			t.Fatalf("at most %d pods ran at once, want parallelism 2", most)
		}
	})

	t.Run("backoff-limit", func(t *testing.T) {
		t.Parallel()
		wlApply(t, ns, job("fails", "  backoffLimit: 2",
			`nodesim.skiff.dev/exit-code: "1", nodesim.skiff.dev/run-seconds: "0.2"`))
		j := waitJob(t, "fails", batchv1.JobFailed, 120*time.Second)
		var reason string
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobFailed {
				reason = c.Reason
			}
		}
		if reason != batchv1.JobReasonBackoffLimitExceeded {
			t.Fatalf("Failed condition reason %q, want BackoffLimitExceeded", reason)
		}
		if j.Status.Failed != 3 || j.Status.Succeeded != 0 {
			t.Fatalf("job status: failed=%d succeeded=%d, want 3/0", j.Status.Failed, j.Status.Succeeded)
		}
		if got := phases(t, "fails"); got[v1.PodFailed] != 3 || len(got) != 1 {
			t.Fatalf("pod phases %v, want 3 Failed", got)
		}
	})

	t.Run("indexed", func(t *testing.T) {
		t.Parallel()
		wlApply(t, ns, job("indexed", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed", ""))
		j := waitJob(t, "indexed", batchv1.JobComplete, 90*time.Second)
		if j.Status.Succeeded != 3 || j.Status.CompletedIndexes != "0-2" {
			t.Fatalf("job status: succeeded=%d completedIndexes=%q, want 3 and 0-2", j.Status.Succeeded, j.Status.CompletedIndexes)
		}
		var idx []string
		for _, p := range wlPods(t, cs, ns, batchv1.JobNameLabel+"=indexed") {
			a := p.Annotations[batchv1.JobCompletionIndexAnnotation]
			if l := p.Labels[batchv1.JobCompletionIndexAnnotation]; l != a {
				t.Errorf("pod %s: index label %q, annotation %q", p.Name, l, a)
			}
			var env string
			for _, e := range p.Spec.Containers[0].Env {
				if e.Name == "JOB_COMPLETION_INDEX" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
					env = e.ValueFrom.FieldRef.FieldPath
				}
			}
			if !strings.Contains(env, batchv1.JobCompletionIndexAnnotation) {
				t.Errorf("pod %s: JOB_COMPLETION_INDEX from %q", p.Name, env)
			}
			if !strings.HasPrefix(p.Name, "indexed-"+a+"-") {
				t.Errorf("pod %s has index %q", p.Name, a)
			}
			idx = append(idx, a)
		}
		sort.Strings(idx)
		if want := []string{"0", "1", "2"}; !slices.Equal(idx, want) {
			t.Fatalf("completion indexes %v, want %v", idx, want)
		}
	})
}

// --- CronJob ------------------------------------------------------------

// TestCronJobFiresAndSuspends runs two every-minute CronJobs created
// together, one of them suspended: the first minute boundary starts a Job
// for the active one only. (A suspended twin proves suspension without
// waiting a further minute.)
func TestCronJobFiresAndSuspends(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 1, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()
	var manifests []string
	for _, c := range []struct {
		name    string
		suspend bool
	}{{"tick", false}, {"sleepy", true}} {
		manifests = append(manifests, fmt.Sprintf(`
apiVersion: batch/v1
kind: CronJob
metadata: {name: %s}
spec:
  schedule: "* * * * *"
  suspend: %v
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {nodesim.skiff.dev/run-seconds: "1"}
        spec:
          restartPolicy: Never
          nodeSelector: {pool: %s}
          containers: [{name: c, image: %s}]
`, c.name, c.suspend, poolName, wlImage))
	}
	created := time.Now()
	wlApply(t, ns, strings.Join(manifests, "---"))
	uids := map[types.UID]string{}
	for _, name := range []string{"tick", "sleepy"} {
		cj, err := cs.BatchV1().CronJobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[cj.UID] = name
	}
	// owned maps CronJob name to the Jobs it controls.
	owned := func() (map[string][]batchv1.Job, error) {
		l, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		m := map[string][]batchv1.Job{}
		for _, j := range l.Items {
			if ref := metav1.GetControllerOf(&j); ref != nil && ref.Kind == "CronJob" && uids[ref.UID] != "" {
				m[uids[ref.UID]] = append(m[uids[ref.UID]], j)
			}
		}
		return m, nil
	}
	var first batchv1.Job
	waitFor(t, 75*time.Second, "a Job created by the CronJob", func() (bool, error) {
		jobs, err := owned()
		if len(jobs["tick"]) > 0 {
			first = jobs["tick"][0]
		}
		return len(jobs["tick"]) > 0, err
	})
	ts := first.Annotations[batchv1.CronJobScheduledTimestampAnnotation]
	at, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		t.Fatalf("job %s: scheduled-timestamp annotation %q: %v", first.Name, ts, err)
	}
	if !at.After(created) || at.Second() != 0 {
		t.Fatalf("job %s scheduled at %s; want the first minute boundary after %s", first.Name, at, created)
	}
	waitFor(t, 60*time.Second, "the CronJob's job "+first.Name+" complete", func() (bool, error) {
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, first.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == v1.ConditionTrue {
				return j.Status.Succeeded == 1, nil
			}
		}
		return false, nil
	})
	waitFor(t, 30*time.Second, "CronJob lastScheduleTime and lastSuccessfulTime", func() (bool, error) {
		c, err := cs.BatchV1().CronJobs(ns).Get(ctx, "tick", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return c.Status.LastScheduleTime != nil && !c.Status.LastScheduleTime.Before(&metav1.Time{Time: at}) &&
			c.Status.LastSuccessfulTime != nil, nil
	})

	// The suspended twin, due at the same minute, started nothing.
	jobs, err := owned()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs["sleepy"]) != 0 {
		t.Fatalf("suspended CronJob started %d jobs (%s)", len(jobs["sleepy"]), jobs["sleepy"][0].Name)
	}
	sleepy, err := cs.BatchV1().CronJobs(ns).Get(ctx, "sleepy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sleepy.Status.LastScheduleTime != nil || len(sleepy.Status.Active) != 0 {
		t.Fatalf("suspended CronJob status: %+v", sleepy.Status)
	}
}

// --- cordon, drain and disruption budgets -------------------------------

func TestDrainRespectsPodDisruptionBudget(t *testing.T) {
	t.Parallel()
	sim, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()
	wlApply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: drain}}
  template:
    metadata: {labels: {app: drain}}
    spec:
      nodeSelector: {pool: %s}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: drain}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: %s}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: app-pdb}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: drain}}
`, poolName, wlImage))
	pods := wlWaitPods(t, cs, ns, "app=drain", 60*time.Second, "2 ready pods", wlAllReady(2))
	waitPDB := func(allowed int32) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("PDB observed with %d disruptions allowed", allowed), func() (bool, error) {
			p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "app-pdb", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return p.Status.ObservedGeneration == p.Generation && p.Status.CurrentHealthy == 2 && p.Status.DisruptionsAllowed == allowed, nil
		})
	}
	waitPDB(0)

	// The eviction subresource refuses: 429 with the budget's reason.
	victim := pods[0]
	node := victim.Spec.NodeName
	err := cs.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: ns}})
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("eviction under a full budget: %v, want 429 TooManyRequests", err)
	}
	mustContain(t, err.Error(), "Cannot evict pod as it would violate the pod's disruption budget.")
	var causes []string
	if st, ok := err.(apierrors.APIStatus); ok && st.Status().Details != nil {
		for _, c := range st.Status().Details.Causes {
			causes = append(causes, string(c.Type)+": "+c.Message)
		}
	}
	mustContain(t, strings.Join(causes, "\n"), "DisruptionBudget: The disruption budget app-pdb needs 2 healthy pods and has 2 currently")
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("refused eviction touched the pod: %v", err)
	}

	// cordon
	mustContain(t, kubectl(t, "cordon", node), "node/"+node+" cordoned")
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !n.Spec.Unschedulable {
		t.Fatalf("node %s not unschedulable after cordon", node)
	}
	var line string
	for _, l := range strings.Split(kubectl(t, "get", "nodes", "-l", "pool="+poolName), "\n") {
		if strings.HasPrefix(l, node+" ") {
			line = l
		}
	}
	mustContain(t, line, "Ready,SchedulingDisabled")

	// drain is refused while the budget allows no disruption.
	out, errOut, err := shared.Kubectl(t, "", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=6s")
	if err == nil {
		t.Fatalf("drain succeeded under a full budget:\n%s%s", out, errOut)
	}
	mustContain(t, out+errOut, "Cannot evict pod as it would violate the pod's disruption budget")

	// With room in the budget, drain evicts the pod.
	kubectl(t, "patch", "pdb", "app-pdb", "-n", ns, "--type=merge", "-p", `{"spec":{"minAvailable":1}}`)
	waitPDB(1)
	out = kubectl(t, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s")
	mustContain(t, out, "evicting pod "+ns+"/"+victim.Name, "pod/"+victim.Name+" evicted", "node/"+node+" drained")
	on, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(on.Items) != 0 {
		t.Fatalf("pods left on drained node %s:\n%s", node, wlDescribe(on.Items))
	}
	// The replacement cannot go anywhere (anti-affinity, cordon).
	pods = wlWaitPods(t, cs, ns, "app=drain", 30*time.Second, "a pending replacement", func(pods []v1.Pod) bool {
		pending := 0
		for _, p := range pods {
			if p.Spec.NodeName == "" && p.Status.Phase == v1.PodPending {
				pending++
			}
		}
		return len(pods) == 2 && pending == 1
	})

	// uncordon: the replacement lands on the node again.
	mustContain(t, kubectl(t, "uncordon", node), "node/"+node+" uncordoned")
	if n, err = cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil || n.Spec.Unschedulable {
		t.Fatalf("node %s still unschedulable after uncordon (%v)", node, err)
	}
	pods = wlWaitPods(t, cs, ns, "app=drain", 60*time.Second, "2 ready pods after uncordon", wlAllReady(2))
	var nodes []string
	for _, p := range pods {
		nodes = append(nodes, p.Spec.NodeName)
	}
	sort.Strings(nodes)
	if !slices.Equal(nodes, sim.NodeNames()) {
		t.Fatalf("pods on %v after uncordon, want one on each of %v", nodes, sim.NodeNames())
	}
}
