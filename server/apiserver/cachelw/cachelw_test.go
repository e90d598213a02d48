package cachelw_test

import (
	"context"
	"errors"
	"reflect"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/cachelw"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory/storetest"
)

var (
	scheme  = storetest.Scheme()
	codecs  = serializer.NewCodecFactory(scheme)
	podsGVR = examplev1.SchemeGroupVersion.WithResource("pods")
	podsGR  = podsGVR.GroupResource()
)

// fixture is a watch-cached store of example pods and a ListerWatcher of
// it whose client fallback only counts its calls.
type fixture struct {
	ctx    context.Context
	st     storage.Interface
	lw     *cache.ListWatch
	mu     sync.Mutex
	own    []runtime.Object
	client int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, f, _ := storetest.NewFactory(t, intern.New(0))
	opts, err := f.Getter(&storetest.Getter{Decorator: genericregistry.StorageWithCacher(), Codecs: codecs}).GetRESTOptions(podsGR, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := &fixture{ctx: ctx, st: storetest.PodStore(ctx, t, opts)}
	x.lw = cachelw.New(cachelw.Config{
		Stores:    f,
		Resource:  podsGVR,
		Convertor: runtime.UnsafeObjectConvertor(scheme),
		Own: func(obj runtime.Object) {
			x.mu.Lock()
			defer x.mu.Unlock()
			x.own = append(x.own, obj)
		},
		Client: &cache.ListWatch{
			ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
				x.mu.Lock()
				defer x.mu.Unlock()
				x.client++
				return &examplev1.PodList{}, nil
			},
			WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
				x.mu.Lock()
				defer x.mu.Unlock()
				x.client++
				return watch.NewEmptyWatch(), nil
			},
		},
	})
	return x
}

func (x *fixture) create(t *testing.T, name, node string) *example.Pod {
	t.Helper()
	in := &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": name}},
		Spec: example.PodSpec{NodeName: node, NodeSelector: map[string]string{"disk": "ssd"}}}
	out := &example.Pod{}
	if err := x.st.Create(x.ctx, "/pods/ns/"+name, in, out, 0); err != nil {
		t.Fatal(err)
	}
	return out
}

// cached returns the watch cache's pod name once it holds it at rv or later.
func (x *fixture) cached(t *testing.T, name, rv string) example.Pod {
	t.Helper()
	for {
		var list example.PodList
		err := x.st.GetList(x.ctx, "/pods", storage.ListOptions{ResourceVersion: "0", Predicate: storage.Everything, Recursive: true}, &list)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			if p.Name == name && p.ResourceVersion >= rv {
				return p
			}
		}
		if x.ctx.Err() != nil {
			t.Fatalf("the watch cache never held %s at %s", name, rv)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (x *fixture) owned() []runtime.Object {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]runtime.Object(nil), x.own...)
}

func next(t *testing.T, ctx context.Context, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed")
		}
		return e
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	return watch.Event{}
}

// sameMap: a and b are the same map, not equal copies.
func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func TestWatchSharesTheWatchCachesObjects(t *testing.T) {
	x := newFixture(t)
	a := x.create(t, "a", "")
	w, err := x.lw.WatchWithContext(x.ctx, metav1.ListOptions{ResourceVersion: a.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	b := x.create(t, "b", "node-1")
	e := next(t, x.ctx, w)
	got, ok := e.Object.(*examplev1.Pod)
	if e.Type != watch.Added || !ok || got.Name != "b" || got.ResourceVersion != b.ResourceVersion || got.Spec.NodeName != "node-1" {
		t.Fatalf("event %s %#v, want ADDED v1 pod b at %s", e.Type, e.Object, b.ResourceVersion)
	}
	if !got.GetObjectKind().GroupVersionKind().Empty() {
		t.Fatalf("kind %v: typed objects from client-go's decoders have none", got.GetObjectKind().GroupVersionKind())
	}
	cached := x.cached(t, "b", b.ResourceVersion)
	if !sameMap(got.Labels, cached.Labels) || !sameMap(got.Spec.NodeSelector, cached.Spec.NodeSelector) {
		t.Fatal("the watched pod holds copies of the watch cache's maps, want the same maps")
	}
	if own := x.owned(); len(own) != 0 {
		t.Fatalf("Own got %d objects shared with the watch cache", len(own))
	}

	if err := x.st.Delete(x.ctx, "/pods/ns/b", &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e = next(t, x.ctx, w)
	if got, ok := e.Object.(*examplev1.Pod); e.Type != watch.Deleted || !ok || got.Name != "b" {
		t.Fatalf("event %s %#v, want DELETED v1 pod b", e.Type, e.Object)
	}
}

func TestWatchListSendsOwnInitialEventsAndBookmark(t *testing.T) {
	x := newFixture(t)
	a := x.create(t, "a", "node-1")
	x.cached(t, "a", a.ResourceVersion)
	yes := true
	w, err := x.lw.WatchWithContext(x.ctx, metav1.ListOptions{
		SendInitialEvents: &yes, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, AllowWatchBookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	e := next(t, x.ctx, w)
	got, ok := e.Object.(*examplev1.Pod)
	if e.Type != watch.Added || !ok || got.Name != "a" {
		t.Fatalf("event %s %#v, want ADDED v1 pod a", e.Type, e.Object)
	}
	e = next(t, x.ctx, w)
	bm, ok := e.Object.(*examplev1.Pod)
	if e.Type != watch.Bookmark || !ok || bm.Annotations[metav1.InitialEventsAnnotationKey] != "true" {
		t.Fatalf("event %s %#v, want the initial-events-end bookmark", e.Type, e.Object)
	}
	// The cacher deep-copies initial events and bookmarks: the informer's own.
	if own := x.owned(); len(own) != 2 || own[0] != runtime.Object(got) || own[1] != runtime.Object(bm) {
		t.Fatalf("Own got %v, want the initial event's pod and the bookmark", own)
	}
}

func TestListConvertsAndShares(t *testing.T) {
	x := newFixture(t)
	a := x.create(t, "a", "node-1")
	cached := x.cached(t, "a", a.ResourceVersion)
	obj, err := x.lw.ListWithContext(x.ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	list, ok := obj.(*examplev1.PodList)
	if !ok || len(list.Items) != 1 || list.Items[0].Name != "a" || list.ResourceVersion == "" {
		t.Fatalf("listed %#v, want a v1 list of pod a with its resource version", obj)
	}
	if !sameMap(list.Items[0].Labels, cached.Labels) {
		t.Fatal("the listed pod holds a copy of the watch cache's labels, want the same map")
	}
}

func TestFallsBackToTheClient(t *testing.T) {
	x := newFixture(t)
	for _, opts := range []metav1.ListOptions{{LabelSelector: "app=a"}, {FieldSelector: "metadata.name=a"}} {
		if _, err := x.lw.ListWithContext(x.ctx, opts); err != nil {
			t.Fatal(err)
		}
		w, err := x.lw.WatchWithContext(x.ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		w.Stop()
	}
	if x.client != 4 {
		t.Fatalf("client called %d times for selecting options, want 4", x.client)
	}

	// A resource without a cached store.
	_, f, _ := storetest.NewFactory(t, nil)
	calls := 0
	lw := cachelw.New(cachelw.Config{Stores: f, Resource: podsGVR, Convertor: runtime.UnsafeObjectConvertor(scheme),
		Client: &cache.ListWatch{ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			calls++
			return nil, errors.New("from the client")
		}}})
	if _, err := lw.ListWithContext(x.ctx, metav1.ListOptions{}); err == nil || calls != 1 {
		t.Fatalf("list without a store: err %v, client calls %d; want the client's error", err, calls)
	}
}

func TestWatchEnds(t *testing.T) {
	x := newFixture(t)
	a := x.create(t, "a", "")
	x.cached(t, "a", a.ResourceVersion)
	one := int64(1)
	for _, tc := range []struct {
		name       string
		opts       metav1.ListOptions
		stop       bool
		closeStopC bool
	}{
		{"timeout", metav1.ListOptions{ResourceVersion: a.ResourceVersion, TimeoutSeconds: &one}, false, false},
		{"stop", metav1.ListOptions{ResourceVersion: a.ResourceVersion}, true, false},
		// As an informer factory started with a stop channel runs them.
		{"stop channel closed", metav1.ListOptions{ResourceVersion: a.ResourceVersion}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stopC := make(chan struct{})
			defer func() {
				if !tc.closeStopC {
					close(stopC)
				}
			}()
			before := goroutines()
			w, err := x.lw.WatchWithContext(wait.ContextForChannel(stopC), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			// The watch cache's watcher and ours; none waits for stopC.
			if started := startedHere(before, goroutines()); len(started) > 2 {
				t.Errorf("a watch started %d goroutines, want 2:\n%s", len(started), strings.Join(started, "\n\n"))
			}
			if tc.stop {
				w.Stop()
				w.Stop() // twice is fine
			}
			if tc.closeStopC {
				close(stopC)
			}
			select {
			case e, ok := <-w.ResultChan():
				if ok {
					t.Fatalf("event %v, want the watch closed", e)
				}
			case <-x.ctx.Done():
				t.Fatal("the watch never closed")
			}
		})
	}
}

// goroutines returns the stacks of all live goroutines by their IDs.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := goruntime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if id, _, ok := strings.Cut(strings.TrimPrefix(g, "goroutine "), " "); ok {
			all[id] = g
		}
	}
	return all
}

// startedHere returns the stacks of the goroutines in after, not in
// before, that the calling goroutine created: the ones a synchronous call
// started, not the ones that timers and background loops of the fixture
// happened to start meanwhile.
func startedHere(before, after map[string]string) []string {
	self := make([]byte, 64)
	id, _, _ := strings.Cut(strings.TrimPrefix(string(self[:goruntime.Stack(self, false)]), "goroutine "), " ")
	var started []string
	for gid, stack := range after {
		if _, old := before[gid]; !old && strings.Contains(stack, " in goroutine "+id+"\n") {
			started = append(started, stack)
		}
	}
	return started
}

// TestInformer: a client-go informer on the ListerWatcher follows the
// store, through creates, updates and deletes.
func TestInformer(t *testing.T) {
	x := newFixture(t)
	x.create(t, "a", "")
	inf := cache.NewSharedIndexInformer(x.lw, &examplev1.Pod{}, 0, cache.Indexers{})
	ctx, cancel := context.WithCancel(x.ctx)
	defer cancel()
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer never synced")
	}
	x.create(t, "b", "")
	if err := x.st.GuaranteedUpdate(x.ctx, "/pods/ns/a", &example.Pod{}, false, nil,
		storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
			p := obj.(*example.Pod)
			p.Spec.NodeName = "node-2"
			return p, nil
		}), nil); err != nil {
		t.Fatal(err)
	}
	if err := x.st.Delete(x.ctx, "/pods/ns/b", &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		keys := inf.GetStore().ListKeys()
		obj, ok, _ := inf.GetStore().GetByKey("ns/a")
		if len(keys) == 1 && ok && obj.(*examplev1.Pod).Spec.NodeName == "node-2" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("informer holds %v, want ns/a on node-2 only", keys)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ cachelw.Stores = (*storefactory.Factory)(nil)
