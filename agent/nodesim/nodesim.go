// Package nodesim simulates Kubernetes nodes (in the manner of kwok): it
// registers Nodes with a given capacity, keeps their Leases and status
// fresh, and moves pods bound to them through their lifecycle (Pending →
// Running and Ready; Succeeded or Failed for pods that do not restart
// always; removal once deleted). A node can be "lost" on demand: its
// heartbeats and pod handling stop, as when a machine dies.
//
// Tests and benchmarks use it to exercise the scheduler and controllers at
// scale without containers; users can try manifests on a simulated fleet.
//
// Pod behaviour can be steered with annotations on the pod (template):
// AnnotationRunSeconds (how long a non-restarting pod runs before it
// exits, default Config.RunDuration) and AnnotationExitCode (its exit
// code; non-zero fails it). Annotating a Node with AnnotationLost="true"
// loses it, as Sim.Lose does.
package nodesim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	nodeutil "k8s.io/component-helpers/node/util"
	"k8s.io/utils/ptr"
)

// Labels and annotations the simulator uses.
const (
	// LabelManaged marks Nodes this simulator owns (value: Config.Name).
	LabelManaged = "nodesim.skiff.dev/managed-by"
	// AnnotationLost set to "true" on a Node stops its heartbeats.
	AnnotationLost = "nodesim.skiff.dev/lost"
	// AnnotationRunSeconds on a pod: seconds a non-restarting pod runs.
	AnnotationRunSeconds = "nodesim.skiff.dev/run-seconds"
	// AnnotationExitCode on a pod: its containers' exit code.
	AnnotationExitCode = "nodesim.skiff.dev/exit-code"
)

// Config describes a simulated fleet.
type Config struct {
	// Name identifies this simulator (Nodes get LabelManaged=Name).
	Name string
	// Prefix of node names: <Prefix><index>.
	Prefix string
	// Nodes is how many nodes to register.
	Nodes int
	// Capacity of each node (cpu, memory, pods, ephemeral-storage).
	Capacity v1.ResourceList
	// Labels and Taints added to every node.
	Labels map[string]string
	Taints []v1.Taint
	// HeartbeatInterval between Lease renewals (kubelet: 10 s).
	HeartbeatInterval time.Duration
	// StatusInterval between full node status reports (kubelet: 5 min).
	StatusInterval time.Duration
	// RunDuration of pods whose restartPolicy is not Always.
	RunDuration time.Duration
	// Workers updating pods concurrently.
	Workers int
	// WatchClient, if set, lists and watches pods and nodes in place of
	// the client given to New. A fleet's writes on one HTTP/2 connection
	// delay the watches that share it (the server writes each
	// connection's frames from one goroutine), where a real fleet's
	// kubelets each have their own.
	WatchClient kubernetes.Interface
	Logger      *slog.Logger
}

func (c *Config) defaults() {
	if c.Name == "" {
		c.Name = "nodesim"
	}
	if c.Prefix == "" {
		c.Prefix = c.Name + "-"
	}
	if c.Capacity == nil {
		c.Capacity = v1.ResourceList{
			v1.ResourceCPU:              resource.MustParse("4"),
			v1.ResourceMemory:           resource.MustParse("16Gi"),
			v1.ResourcePods:             resource.MustParse("110"),
			v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		}
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 5 * time.Minute
	}
	if c.RunDuration == 0 {
		c.RunDuration = time.Second
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// leaseDuration is what kubelet uses (nodeLeaseDurationSeconds).
const leaseDuration = 40

// Sim is a running simulated fleet.
type Sim struct {
	cfg    Config
	client kubernetes.Interface
	pods   corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]

	mu    sync.Mutex
	nodes map[string]*node
	// timers schedule pod exits; keyed by pod UID.
	timers map[types.UID]*time.Timer
}

type node struct {
	name   string
	ip     netip.Addr
	lost   bool
	lease  *coordinationv1.Lease
	cidr   netip.Prefix
	nextIP uint32
	// reported is when the node status was last written.
	reported time.Time
	// beating is set while a heartbeat for the node is in flight.
	beating bool
	// ready is the Node's Ready condition as last seen by the informer.
	ready bool
}

// New prepares a simulator; Run starts it.
func New(client kubernetes.Interface, cfg Config) *Sim {
	cfg.defaults()
	return &Sim{
		cfg:    cfg,
		client: client,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodesim"}),
		nodes:  map[string]*node{},
		timers: map[types.UID]*time.Timer{},
	}
}

// NodeNames returns the simulated nodes' names in index order.
func (s *Sim) NodeNames() []string {
	names := make([]string, s.cfg.Nodes)
	for i := range names {
		names[i] = s.nodeName(i)
	}
	return names
}

func (s *Sim) nodeName(i int) string { return fmt.Sprintf("%s%d", s.cfg.Prefix, i) }

// Run registers the nodes, then keeps them alive and runs their pods until
// ctx ends. It returns once the nodes are registered and Ready is reported
// on ready (if non-nil) .
func (s *Sim) Run(ctx context.Context, ready chan<- struct{}) error {
	if s.cfg.Nodes < 1 {
		return errors.New("nodesim: no nodes to simulate")
	}
	// Heartbeats start with registration: in a large fleet the first
	// nodes must not go silent while the last ones register.
	var wg sync.WaitGroup
	defer wg.Wait()
	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	defer stopHeartbeats()
	wg.Go(func() { s.heartbeats(hbCtx) })
	if err := s.register(ctx); err != nil {
		return err
	}
	watchClient := s.cfg.WatchClient
	if watchClient == nil {
		watchClient = s.client
	}
	factory := informers.NewSharedInformerFactoryWithOptions(watchClient, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
	}))
	podInformer := factory.Core().V1().Pods()
	s.pods = podInformer.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			s.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if p, ok := obj.(*v1.Pod); ok {
				s.stopTimer(p.UID)
			}
		},
	}); err != nil {
		return err
	}
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(watchClient, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = labels.Set{LabelManaged: s.cfg.Name}.String()
	}))
	if _, err := nodeFactory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.nodeChanged(obj.(*v1.Node)) },
		UpdateFunc: func(_, obj any) { s.nodeChanged(obj.(*v1.Node)) },
	}); err != nil {
		return err
	}
	factory.StartWithContext(ctx)
	nodeFactory.StartWithContext(ctx)
	factory.WaitForCacheSync(ctx.Done())
	nodeFactory.WaitForCacheSync(ctx.Done())
	defer factory.Shutdown()
	defer nodeFactory.Shutdown()

	for range s.cfg.Workers {
		wg.Go(func() {
			for s.processNext(ctx) {
			}
		})
	}
	if ready != nil {
		close(ready)
	}
	<-ctx.Done()
	s.queue.ShutDown()
	s.mu.Lock()
	for _, t := range s.timers {
		t.Stop()
	}
	s.mu.Unlock()
	return nil
}

// Lose stops a node's heartbeats and pod handling, as if it died.
func (s *Sim) Lose(name string) error { return s.setLost(name, true) }

// Restore resumes a lost node.
func (s *Sim) Restore(name string) error { return s.setLost(name, false) }

func (s *Sim) setLost(name string, lost bool) error {
	s.mu.Lock()
	n, ok := s.nodes[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("nodesim: no node %q", name)
	}
	resumed := n.lost && !lost
	n.lost = lost
	if resumed {
		n.reported = time.Time{} // report Ready again at once
	}
	s.mu.Unlock()
	if resumed {
		s.requeueNode(name)
	}
	return nil
}

// requeueNode queues every pod bound to a node, so a node that comes back
// catches up with what happened while it was away.
func (s *Sim) requeueNode(name string) {
	if s.pods == nil {
		return
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		if p.Spec.NodeName == name {
			s.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
}

// Delete removes the simulated nodes from the cluster.
func (s *Sim) Delete(ctx context.Context) error {
	var errs []error
	for _, name := range s.NodeNames() {
		if err := s.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sim) nodeChanged(n *v1.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.nodes[n.Name]
	if !ok {
		return
	}
	if v, ok := n.Annotations[AnnotationLost]; ok {
		lost := v == "true"
		if sn.lost && !lost {
			sn.reported = time.Time{}
			defer func() { go s.requeueNode(n.Name) }()
		}
		sn.lost = lost
	}
	sn.ready = nodeReady(n)
	if !sn.cidr.IsValid() && n.Spec.PodCIDR != "" {
		if p, err := netip.ParsePrefix(n.Spec.PodCIDR); err == nil && p.Addr().Is4() {
			sn.cidr, sn.nextIP = p, 2
		}
	}
}

// register creates (or adopts) every node and its Lease, in parallel.
func (s *Sim) register(ctx context.Context) error {
	idx := make(chan int)
	errc := make(chan error, s.cfg.Nodes)
	var wg sync.WaitGroup
	for range min(s.cfg.Workers, s.cfg.Nodes) {
		wg.Go(func() {
			for i := range idx {
				errc <- s.registerNode(ctx, i)
			}
		})
	}
	for i := range s.cfg.Nodes {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sim) registerNode(ctx context.Context, i int) error {
	name := s.nodeName(i)
	ip := netip.AddrFrom4([4]byte{10, 250, byte(i / 250), byte(i%250 + 1)})
	lbls := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"type":                   "nodesim",
		LabelManaged:             s.cfg.Name,
	}
	for k, v := range s.cfg.Labels {
		lbls[k] = v
	}
	want := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec:       v1.NodeSpec{Taints: s.cfg.Taints},
	}
	nodes := s.client.CoreV1().Nodes()
	created, err := nodes.Create(ctx, want, metav1.CreateOptions{FieldManager: "nodesim"})
	if apierrors.IsAlreadyExists(err) {
		created, err = nodes.Get(ctx, name, metav1.GetOptions{})
		if err == nil && created.Labels[LabelManaged] != s.cfg.Name {
			return fmt.Errorf("nodesim: node %s exists and is not managed by %q", name, s.cfg.Name)
		}
	}
	if err != nil {
		return fmt.Errorf("nodesim: register %s: %w", name, err)
	}
	n := &node{name: name, ip: ip, ready: true} // reportStatus reports it Ready
	if err := s.reportStatus(ctx, n, created); err != nil {
		return err
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: v1.NamespaceNodeLease,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: created.UID}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(name),
			LeaseDurationSeconds: ptr.To[int32](leaseDuration),
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	leases := s.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	l, err := leases.Create(ctx, lease, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if l, err = leases.Get(ctx, name, metav1.GetOptions{}); err == nil {
			l.Spec = lease.Spec
			l, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("nodesim: lease for %s: %w", name, err)
	}
	n.lease = l
	s.mu.Lock()
	s.nodes[name] = n
	s.mu.Unlock()
	return nil
}

// reportStatus writes the node's status as a healthy kubelet does: as a
// strategic merge patch of the status (upstream's PatchNodeStatus, what the
// kubelet sends), with no resourceVersion precondition, so controllers that
// write the node at the same time (IPAM, node lifecycle, TTL) cannot make
// it fail with a conflict.
func (s *Sim) reportStatus(ctx context.Context, n *node, cur *v1.Node) error {
	if cur == nil {
		var err error
		if cur, err = s.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("nodesim: status of %s: %w", n.name, err)
		}
	}
	if _, _, err := nodeutil.PatchNodeStatus(s.client.CoreV1(), types.NodeName(n.name), cur, s.healthyStatus(n, cur)); err != nil {
		return fmt.Errorf("nodesim: status of %s: %w", n.name, err)
	}
	s.mu.Lock()
	n.reported = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Sim) healthyStatus(n *node, cur *v1.Node) *v1.Node {
	now := metav1.Now()
	cond := func(t v1.NodeConditionType, st v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		c := v1.NodeCondition{Type: t, Status: st, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range cur.Status.Conditions {
			if old.Type == t && old.Status == st {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	st := cur.DeepCopy()
	st.Status.Capacity = s.cfg.Capacity
	st.Status.Allocatable = s.cfg.Capacity
	st.Status.Conditions = []v1.NodeCondition{
		cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
	}
	st.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.ip.String()}, {Type: v1.NodeHostName, Address: n.name}}
	st.Status.NodeInfo = v1.NodeSystemInfo{
		MachineID: n.name, SystemUUID: n.name, BootID: n.name,
		KernelVersion: "nodesim", OSImage: "Skiff node simulator", ContainerRuntimeVersion: "nodesim://1",
		KubeletVersion: "v1.37.2-nodesim", OperatingSystem: "linux", Architecture: "amd64",
	}
	return st
}

// heartbeats renews every live node's Lease each interval (spread over the
// interval so a large fleet does not burst) and re-reports status when due.
func (s *Sim) heartbeats(ctx context.Context) {
	names := s.NodeNames()
	step := s.cfg.HeartbeatInterval / time.Duration(max(len(names), 1))
	t := time.NewTicker(max(step, time.Millisecond))
	defer t.Stop()
	for i := 0; ; i = (i + 1) % len(names) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		n := s.nodes[names[i]]
		s.mu.Unlock()
		if n == nil {
			continue
		}
		go s.heartbeat(ctx, n)
	}
}

func (s *Sim) heartbeat(ctx context.Context, n *node) {
	s.mu.Lock()
	lost, lease, due, busy := n.lost, n.lease, time.Since(n.reported) > s.cfg.StatusInterval, n.beating
	if !lost && lease != nil && !busy {
		n.beating = true
	}
	s.mu.Unlock()
	if lost || lease == nil || busy {
		return // lost, not registered yet, or the previous beat is still in flight
	}
	defer func() {
		s.mu.Lock()
		n.beating = false
		s.mu.Unlock()
	}()
	l := lease.DeepCopy()
	l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	leases := s.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	updated, err := leases.Update(ctx, l, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		if cur, gerr := leases.Get(ctx, n.name, metav1.GetOptions{}); gerr == nil {
			cur.Spec.RenewTime = l.Spec.RenewTime
			updated, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		// client-go returns an empty object with an error: keep the old
		// lease and try again next interval.
		if ctx.Err() == nil {
			s.cfg.Logger.Warn("lease renewal failed", "node", n.name, "err", err)
		}
		return
	}
	s.mu.Lock()
	n.lease = updated
	s.mu.Unlock()
	// Re-report status when due, or when the control plane marked the
	// node not Ready (after it was lost and came back).
	// The node informer keeps n.ready current.
	s.mu.Lock()
	ready := n.ready
	s.mu.Unlock()
	if due || !ready {
		if err := s.reportStatus(ctx, n, nil); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("node status update failed", "node", n.name, "err", err)
		}
	}
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func (s *Sim) processNext(ctx context.Context) bool {
	key, shutdown := s.queue.Get()
	if shutdown {
		return false
	}
	defer s.queue.Done(key)
	if err := s.syncPod(ctx, key); err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Debug("pod sync failed; retrying", "pod", key, "err", err)
			s.queue.AddRateLimited(key)
		}
		return true
	}
	s.queue.Forget(key)
	return true
}

// syncPod moves one pod towards what its node would report.
func (s *Sim) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := s.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	n, ok := s.nodes[pod.Spec.NodeName]
	lost := ok && n.lost
	s.mu.Unlock()
	if !ok || lost {
		return nil
	}
	pods := s.client.CoreV1().Pods(ns)
	switch {
	case pod.DeletionTimestamp != nil:
		// The containers "stop" at once; the node confirms the deletion.
		s.stopTimer(pod.UID)
		err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	case pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed:
		return nil
	case pod.Status.Phase != v1.PodRunning:
		st := s.runningStatus(pod, n)
		p := pod.DeepCopy()
		p.Status = st
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: "nodesim"}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}
		s.scheduleExit(pod)
		return nil
	default:
		s.scheduleExit(pod)
		return nil
	}
}

// scheduleExit arranges for a pod that does not always restart to finish
// after its run duration.
func (s *Sim) scheduleExit(pod *v1.Pod) {
	if pod.Spec.RestartPolicy == v1.RestartPolicyAlways || pod.Spec.RestartPolicy == "" {
		return
	}
	run := s.cfg.RunDuration
	if v, err := strconv.ParseFloat(pod.Annotations[AnnotationRunSeconds], 64); err == nil && v >= 0 {
		run = time.Duration(v * float64(time.Second))
	}
	start := time.Now()
	if pod.Status.StartTime != nil {
		start = pod.Status.StartTime.Time
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.timers[pod.UID]; ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	uid := pod.UID
	s.timers[pod.UID] = time.AfterFunc(time.Until(start.Add(run)), func() {
		s.finish(key, uid)
	})
}

func (s *Sim) stopTimer(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.timers[uid]; ok {
		t.Stop()
		delete(s.timers, uid)
	}
}

// finish ends a non-restarting pod with its exit code. OnFailure pods that
// fail are restarted in place instead (restartCount grows), as kubelet does.
func (s *Sim) finish(key string, uid types.UID) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		pod, err := s.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && (pod.UID != uid || pod.DeletionTimestamp != nil)) {
			return true, nil
		}
		if err != nil {
			return false, nil
		}
		s.mu.Lock()
		n := s.nodes[pod.Spec.NodeName]
		lost := n == nil || n.lost
		s.mu.Unlock()
		if lost {
			return true, nil
		}
		code, _ := strconv.Atoi(pod.Annotations[AnnotationExitCode])
		p := pod.DeepCopy()
		now := metav1.Now()
		restart := code != 0 && pod.Spec.RestartPolicy == v1.RestartPolicyOnFailure
		for i := range p.Status.ContainerStatuses {
			cs := &p.Status.ContainerStatuses[i]
			term := &v1.ContainerStateTerminated{ExitCode: int32(code), Reason: "Completed", FinishedAt: now, ContainerID: cs.ContainerID}
			if cs.State.Running != nil {
				term.StartedAt = cs.State.Running.StartedAt
			}
			if code != 0 {
				term.Reason = "Error"
			}
			if restart {
				cs.LastTerminationState = v1.ContainerState{Terminated: term}
				cs.RestartCount++
				cs.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}}
				continue
			}
			cs.State = v1.ContainerState{Terminated: term}
			cs.Ready, cs.Started = false, ptr.To(false)
		}
		if !restart {
			p.Status.Phase = v1.PodSucceeded
			if code != 0 {
				p.Status.Phase = v1.PodFailed
			}
			setPodCondition(&p.Status, v1.PodReady, v1.ConditionFalse, "PodCompleted", now)
			setPodCondition(&p.Status, v1.ContainersReady, v1.ConditionFalse, "PodCompleted", now)
		}
		_, err = s.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: "nodesim"})
		if err != nil {
			return false, nil
		}
		if restart {
			s.mu.Lock()
			delete(s.timers, uid)
			s.mu.Unlock()
			p.Status.StartTime = &now
			s.scheduleExit(p)
		}
		return true, nil
	})
	if err != nil {
		s.cfg.Logger.Warn("could not finish pod", "pod", key, "err", err)
	}
}

// runningStatus is the status kubelet reports once all containers run.
func (s *Sim) runningStatus(pod *v1.Pod, n *node) v1.PodStatus {
	now := metav1.Now()
	st := *pod.Status.DeepCopy()
	st.Phase = v1.PodRunning
	st.HostIP = n.ip.String()
	st.HostIPs = []v1.HostIP{{IP: st.HostIP}}
	if pod.Spec.HostNetwork {
		st.PodIP = st.HostIP
	} else {
		st.PodIP = s.allocateIP(n).String()
	}
	st.PodIPs = []v1.PodIP{{IP: st.PodIP}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, v1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: imageID(c.Image), ContainerID: containerID(pod, c.Name), Ready: true,
			State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}},
		})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, v1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: imageID(c.Image), ContainerID: containerID(pod, c.Name),
			Ready: true, Started: ptr.To(true),
			State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
		})
	}
	for _, t := range []v1.PodConditionType{v1.PodReadyToStartContainers, v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
		setPodCondition(&st, t, v1.ConditionTrue, "", now)
	}
	return st
}

func setPodCondition(st *v1.PodStatus, t v1.PodConditionType, status v1.ConditionStatus, reason string, now metav1.Time) {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type == t {
			if c.Status != status {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason = status, reason
			return
		}
	}
	st.Conditions = append(st.Conditions, v1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: now})
}

func (s *Sim) allocateIP(n *node) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n.cidr.IsValid() {
		a := n.cidr.Addr().As4()
		host := n.nextIP%250 + 2
		n.nextIP++
		a[3] = byte(host)
		return netip.AddrFrom4(a)
	}
	// No podCIDR (a fleet larger than the cluster CIDR): a stand-in
	// address from the node's own number.
	ip := n.ip.As4()
	host := n.nextIP%250 + 2
	n.nextIP++
	return netip.AddrFrom4([4]byte{100, 64 + ip[2]%64, ip[3], byte(host)})
}

func imageID(image string) string { return "nodesim://" + image }

func containerID(pod *v1.Pod, name string) string {
	return "nodesim://" + string(pod.UID) + "/" + name
}
