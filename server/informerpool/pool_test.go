package informerpool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func pod(name string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", ResourceVersion: "1",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "test"}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// recorder is a handler that records what it is told, as "add x",
// "update x", "delete x".
type recorder struct {
	mu     sync.Mutex
	events []string
}

func name(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return "tombstone:" + name(t.Obj)
	}
	return obj.(*corev1.Pod).Name
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}
func (r *recorder) OnAdd(obj any, _ bool)  { r.add("add " + name(obj)) }
func (r *recorder) OnUpdate(_, newObj any) { r.add("update " + name(newObj)) }
func (r *recorder) OnDelete(obj any)       { r.add("delete " + name(obj)) }
func (r *recorder) seen() []string         { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.events) }

// TestActiveHandler: the notifications a field-selected informer
// (status.phase!=Succeeded,status.phase!=Failed) would send.
func TestActiveHandler(t *testing.T) {
	running, pending := pod("p", corev1.PodRunning), pod("p", corev1.PodPending)
	done, failed := pod("p", corev1.PodSucceeded), pod("p", corev1.PodFailed)
	for _, tc := range []struct {
		name string
		send func(cache.ResourceEventHandler)
		want []string
	}{
		{"add running", func(h cache.ResourceEventHandler) { h.OnAdd(running, true) }, []string{"add p"}},
		{"add succeeded", func(h cache.ResourceEventHandler) { h.OnAdd(done, true) }, nil},
		{"add failed", func(h cache.ResourceEventHandler) { h.OnAdd(failed, false) }, nil},
		{"pending to running", func(h cache.ResourceEventHandler) { h.OnUpdate(pending, running) }, []string{"update p"}},
		{"running to succeeded", func(h cache.ResourceEventHandler) { h.OnUpdate(running, done) }, []string{"delete p"}},
		{"running to failed", func(h cache.ResourceEventHandler) { h.OnUpdate(running, failed) }, []string{"delete p"}},
		{"succeeded resync", func(h cache.ResourceEventHandler) { h.OnUpdate(done, done) }, nil},
		{"failed to running", func(h cache.ResourceEventHandler) { h.OnUpdate(failed, running) }, []string{"add p"}},
		{"delete running", func(h cache.ResourceEventHandler) { h.OnDelete(running) }, []string{"delete p"}},
		{"delete succeeded", func(h cache.ResourceEventHandler) { h.OnDelete(done) }, nil},
		{"tombstone running", func(h cache.ResourceEventHandler) {
			h.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/p", Obj: running})
		}, []string{"delete tombstone:p"}},
		{"tombstone failed", func(h cache.ResourceEventHandler) {
			h.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/p", Obj: failed})
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			tc.send(activeHandler{r})
			if got := r.seen(); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestActiveIndexer: every read of the store, index and lister leaves
// terminal pods out.
func TestActiveIndexer(t *testing.T) {
	all := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
	})
	for _, p := range []*corev1.Pod{pod("a", corev1.PodRunning), pod("b", corev1.PodSucceeded), pod("c", corev1.PodPending), pod("d", corev1.PodFailed)} {
		if err := all.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	x := activeIndexer{all}
	names := func(objs []any) []string {
		var out []string
		for _, o := range objs {
			out = append(out, name(o))
		}
		slices.Sort(out)
		return out
	}
	want := []string{"a", "c"}
	if got := names(x.List()); !slices.Equal(got, want) {
		t.Errorf("List: %q, want %q", got, want)
	}
	keys := x.ListKeys()
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"ns/a", "ns/c"}) {
		t.Errorf("ListKeys: %q", keys)
	}
	objs, err := x.ByIndex(cache.NamespaceIndex, "ns")
	if got := names(objs); err != nil || !slices.Equal(got, want) {
		t.Errorf("ByIndex: %q, %v", got, err)
	}
	objs, err = x.Index(cache.NamespaceIndex, pod("any", ""))
	if got := names(objs); err != nil || !slices.Equal(got, want) {
		t.Errorf("Index: %q, %v", got, err)
	}
	ikeys, err := x.IndexKeys(cache.NamespaceIndex, "ns")
	slices.Sort(ikeys)
	if err != nil || !slices.Equal(ikeys, []string{"ns/a", "ns/c"}) {
		t.Errorf("IndexKeys: %q, %v", ikeys, err)
	}
	for key, exists := range map[string]bool{"ns/a": true, "ns/b": false, "ns/c": true, "ns/d": false, "ns/none": false} {
		obj, ok, err := x.GetByKey(key)
		if err != nil || ok != exists || (obj != nil) != exists {
			t.Errorf("GetByKey(%s) = %v, %v, %v; want exists %v", key, obj, ok, err, exists)
		}
	}
	if _, ok, _ := x.Get(pod("b", corev1.PodRunning)); ok {
		t.Error("Get found terminal pod b")
	}
	lister := (&activePods{informer: &activeInformer{indexer: x}}).Lister()
	if _, err := lister.Pods("ns").Get("d"); err == nil {
		t.Error("lister found terminal pod d")
	}
	ps, err := lister.Pods("ns").List(labels.Everything())
	if err != nil || len(ps) != 2 {
		t.Errorf("lister List: %d pods, %v; want 2", len(ps), err)
	}
}

// apiServerFactory is a factory made as the API server makes its own.
func apiServerFactory(client kubernetes.Interface) informers.SharedInformerFactory {
	trim := func(obj any) (any, error) {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetManagedFields(nil)
		}
		return obj, nil
	}
	return informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithTransform(trim))
}

// TestPoolViews runs the pool on a fake clientset: both components share
// each informer, the scheduler's pods leave terminal pods out, and the
// informers outlive the Start caller's stop channel (the pool's context
// ends them).
func TestPoolViews(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	client := fake.NewClientset(pod("run", corev1.PodRunning), pod("done", corev1.PodSucceeded))
	p := New(ctx, apiServerFactory(client))
	started := 0
	cm := p.ControllerManager(func() { started++ })
	sched := p.Scheduler()

	if cm.Core().V1().Nodes().Informer().GetIndexer() != sched.Core().V1().Nodes().Informer().GetIndexer() {
		t.Error("the components have different node informers")
	}
	cmPods := cm.Core().V1().Pods()
	schedPods := sched.Core().V1().Pods()
	if got := sched.InformerFor(&corev1.Pod{}, nil); got != schedPods.Informer() {
		t.Error("the scheduler's InformerFor(Pod) is not its filtered pod informer")
	}
	gi, err := sched.ForResource(podResource)
	if err != nil || gi.Informer() != schedPods.Informer() {
		t.Errorf("the scheduler's ForResource(pods) is not its filtered pod informer: %v", err)
	}
	r := &recorder{}
	if _, err := schedPods.Informer().AddEventHandler(r); err != nil {
		t.Fatal(err)
	}
	// The scheduler's DRA plugin adds its index once per run; again must
	// not fail.
	idx := cache.Indexers{"by-name": func(obj any) ([]string, error) { return []string{name(obj)}, nil }}
	for i := range 2 {
		if err := schedPods.Informer().AddIndexers(idx); err != nil {
			t.Fatalf("AddIndexers #%d: %v", i+1, err)
		}
	}

	stopped := make(chan struct{})
	close(stopped)
	cm.Start(stopped)
	sched.Start(stopped)
	cm.Shutdown()
	if started != 1 {
		t.Fatalf("started called %d times, want 1", started)
	}
	for typ, ok := range cm.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}

	if all, _ := cmPods.Lister().List(labels.Everything()); len(all) != 2 {
		t.Errorf("controller manager sees %d pods, want 2", len(all))
	}
	if act, _ := schedPods.Lister().List(labels.Everything()); len(act) != 1 || act[0].Name != "run" {
		t.Errorf("scheduler sees %v, want only run", act)
	}
	if objs, _ := schedPods.Informer().GetIndexer().ByIndex("by-name", "done"); len(objs) != 0 {
		t.Errorf("scheduler's index finds terminal pod: %v", objs)
	}

	// The pod finishing is a delete to the scheduler; the informers run
	// although the Start callers' stop channel was closed.
	finished := pod("run", corev1.PodSucceeded)
	if _, err := client.CoreV1().Pods("ns").UpdateStatus(ctx, finished, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"add run", "delete run"}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return slices.Equal(r.seen(), want), nil
	}); err != nil {
		t.Fatalf("scheduler handler saw %q, want %q", r.seen(), want)
	}
	if act, _ := schedPods.Lister().List(labels.Everything()); len(act) != 0 {
		t.Errorf("scheduler still sees %v", act)
	}
	if err := schedPods.Informer().SetTransform(nil); err == nil {
		t.Error("SetTransform on the shared pod informer was accepted")
	}
	cancel()
	if err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return cmPods.Informer().IsStopped(), nil
	}); err != nil {
		t.Fatal(fmt.Errorf("pod informer still running after the pool's context ended: %w", err))
	}
}

// TestSchedulerStartsAfterControllerManager: the scheduler's Start starts
// nothing until the controller manager's Start (upstream builds every
// controller, adding their event handlers, before it starts the
// informers), and gives up when the pool's context ends.
func TestSchedulerStartsAfterControllerManager(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	client := fake.NewClientset(pod("run", corev1.PodRunning))
	p := New(ctx, apiServerFactory(client))
	sched := p.Scheduler()
	nodes := sched.Core().V1().Nodes().Informer()
	returned := make(chan struct{})
	go func() {
		sched.Start(ctx.Done())
		close(returned)
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case <-returned:
		t.Fatal("the scheduler's Start returned before the controller manager started")
	default:
	}
	if nodes.HasSynced() {
		t.Fatal("an informer ran before the controller manager started")
	}

	// A controller manager handler added now, as upstream's controllers add
	// theirs while being built, is called only after its Start.
	cm := p.ControllerManager(nil)
	r := &recorder{}
	if _, err := cm.Core().V1().Pods().Informer().AddEventHandler(r); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := r.seen(); len(got) != 0 {
		t.Fatalf("a handler was called before the controller manager started: %q", got)
	}
	cm.Start(ctx.Done())
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler's Start still waits after the controller manager started")
	}
	for typ, ok := range sched.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return slices.Equal(r.seen(), []string{"add run"}), nil
	}); err != nil {
		t.Fatalf("controller manager handler saw %q after its Start, want the running pod added", r.seen())
	}

	// Without a controller manager, the scheduler's Start returns when the
	// pool's context ends, having started nothing.
	ctx2, cancel2 := context.WithCancel(t.Context())
	p2 := New(ctx2, apiServerFactory(client))
	returned2 := make(chan struct{})
	go func() {
		p2.Scheduler().Start(ctx2.Done())
		close(returned2)
	}()
	cancel2()
	select {
	case <-returned2:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler's Start still waits after the pool's context ended")
	}
}

// TestSharesRunningInformers: the components get the API server's own
// informers, already running, and their handlers on them are called only
// once the controller manager starts (typed and generic alike), then with
// every object as part of the initial list.
func TestSharesRunningInformers(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	client := fake.NewClientset(pod("run", corev1.PodRunning))
	base := apiServerFactory(client)
	basePods := base.Core().V1().Pods().Informer()
	base.StartWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), basePods.HasSynced) {
		t.Fatal("the API server's pod informer did not sync")
	}

	p := New(ctx, base)
	cm := p.ControllerManager(nil)
	pods := cm.Core().V1().Pods().Informer()
	if pods.GetIndexer() != basePods.GetIndexer() {
		t.Fatal("the controller manager has its own pod informer, not the API server's")
	}
	gi, err := cm.ForResource(podResource)
	if err != nil || gi.Informer().GetIndexer() != basePods.GetIndexer() {
		t.Fatalf("ForResource(pods) is not the API server's informer: %v", err)
	}
	initial := &initialRecorder{}
	typed, generic := &recorder{}, &recorder{}
	for _, add := range []func() error{
		func() error { _, err := pods.AddEventHandler(typed); return err },
		func() error { _, err := gi.Informer().AddEventHandler(generic); return err },
		func() error { _, err := pods.AddEventHandler(initial); return err },
	} {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if len(typed.seen()) != 0 || len(generic.seen()) != 0 {
		t.Fatalf("handlers were called before the controller manager started: %q, %q", typed.seen(), generic.seen())
	}
	cm.Start(ctx.Done())
	for _, r := range []*recorder{typed, generic} {
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return slices.Equal(r.seen(), []string{"add run"}), nil
		}); err != nil {
			t.Fatalf("handler saw %q after the start, want the running pod added", r.seen())
		}
	}
	// Each handler has its own listener goroutine, so this one may be
	// called after the two above: wait for its call, then check it.
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(initial.get()) > 0, nil
	}); err != nil {
		t.Fatal("the third handler was never called after the start")
	}
	if got := initial.get(); !slices.Equal(got, []bool{true}) {
		t.Errorf("isInInitialList = %v, want [true]", got)
	}
	if _, err := client.CoreV1().Pods("ns").UpdateStatus(ctx, pod("run", corev1.PodSucceeded), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return slices.Equal(typed.seen(), []string{"add run", "update run"}), nil
	}); err != nil {
		t.Fatalf("handler saw %q, want the update too", typed.seen())
	}
}

type initialRecorder struct {
	mu      sync.Mutex
	initial []bool
}

func (r *initialRecorder) OnAdd(_ any, initial bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.initial = append(r.initial, initial)
}
func (r *initialRecorder) OnUpdate(_, _ any) {}
func (r *initialRecorder) OnDelete(any)      {}
func (r *initialRecorder) get() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.initial)
}

// TestGatedHandlerEndsWithPool: a handler held at the gate is dropped, not
// called, when the pool ends before the controller manager starts.
func TestGatedHandlerEndsWithPool(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	g := newGated(ctx, nil, make(chan struct{}), time.Hour)
	r := &recorder{}
	h := g.handler(r)
	returned := make(chan struct{})
	go func() {
		h.OnAdd(pod("a", corev1.PodRunning), true)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("the handler was called before the gate opened")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the held call did not return when the pool ended")
	}
	if len(r.seen()) != 0 {
		t.Errorf("the handler was called: %q", r.seen())
	}
}

// resyncRecorder is an informer that records the resync period each
// handler asks for.
type resyncRecorder struct {
	cache.SharedIndexInformer
	got []*time.Duration
}

func (r *resyncRecorder) AddEventHandlerWithResyncPeriod(_ cache.ResourceEventHandler, d time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	r.got = append(r.got, &d)
	return nil, nil
}

func (r *resyncRecorder) AddEventHandlerWithOptions(_ cache.ResourceEventHandler, o cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	r.got = append(r.got, o.ResyncPeriod)
	return nil, nil
}

// TestGatedResync: handlers that do not ask for a resync period get the
// pool's (the controller manager's 12-24 h), not the API server factory's
// 10 minutes; a period asked for is kept.
func TestGatedResync(t *testing.T) {
	poolResync, zero, five := 13*time.Hour, time.Duration(0), 5*time.Minute
	tests := []struct {
		name string
		add  func(cache.SharedIndexInformer)
		want *time.Duration
	}{
		{"AddEventHandler", func(i cache.SharedIndexInformer) { i.AddEventHandler(&recorder{}) }, &poolResync},
		{"WithResyncPeriod", func(i cache.SharedIndexInformer) { i.AddEventHandlerWithResyncPeriod(&recorder{}, five) }, &five},
		{"WithOptions unset", func(i cache.SharedIndexInformer) { i.AddEventHandlerWithOptions(&recorder{}, cache.HandlerOptions{}) }, &poolResync},
		{"WithOptions zero", func(i cache.SharedIndexInformer) {
			i.AddEventHandlerWithOptions(&recorder{}, cache.HandlerOptions{ResyncPeriod: &zero})
		}, &zero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGated(t.Context(), nil, make(chan struct{}), poolResync)
			rec := &resyncRecorder{}
			tt.add(g.wrap(rec))
			if len(rec.got) != 1 || rec.got[0] == nil || *rec.got[0] != *tt.want {
				t.Errorf("resync periods asked for: %v, want [%v]", rec.got, *tt.want)
			}
		})
	}
}
