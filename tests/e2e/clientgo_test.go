package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/skiff-sh/skiff/tests/testserver"
)

func clientset(t *testing.T, protobuf bool) *kubernetes.Clientset {
	t.Helper()
	cfg := shared.RESTConfig(t)
	if protobuf {
		cfg.ContentType = "application/vnd.kubernetes.protobuf"
		cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestClientGoTypedProtobuf(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	cs := clientset(t, true)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "pb-", Labels: map[string]string{"a": "b"}}, Data: map[string]string{"k": "v"}}
	created, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.UID == "" || created.ResourceVersion == "" || created.CreationTimestamp.IsZero() || len(created.Name) <= len("pb-") {
		t.Fatalf("server did not fill metadata: %+v", created.ObjectMeta)
	}
	got, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("get: %v %v", err, got)
	}
	// Optimistic concurrency: an update with a stale resourceVersion conflicts.
	got.Data["k"] = "v2"
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got.Data["k"] = "v3"
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: want Conflict, got %v", err)
	}
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: created.Name}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		t.Fatalf("duplicate create: want AlreadyExists, got %v", err)
	}
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "a=b"})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list: %v %d", err, len(list.Items))
	}
	// Chunked list.
	for i := range 5 {
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("page-%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{Limit: 2})
	if err != nil || len(page.Items) != 2 || page.Continue == "" || page.RemainingItemCount == nil {
		t.Fatalf("paged list: %v %d %q", err, len(page.Items), page.Continue)
	}
	// The remaining pages, and a list at that exact resourceVersion, show
	// the namespace as of the first page, whatever was written since.
	exact, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ResourceVersion: page.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if err != nil {
		t.Fatalf("list at exact resourceVersion %s: %v", page.ResourceVersion, err)
	}
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "page-4", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "page-9"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var paged, atRV []string
	for _, cm := range exact.Items {
		atRV = append(atRV, cm.Name)
	}
	for p := page; ; {
		for _, cm := range p.Items {
			paged = append(paged, cm.Name)
		}
		if p.Continue == "" {
			break
		}
		if p, err = cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{Limit: 2, Continue: p.Continue}); err != nil {
			t.Fatalf("continue: %v", err)
		}
	}
	if !slices.Contains(atRV, "page-4") || slices.Contains(atRV, "page-9") || !slices.Equal(paged, atRV) {
		t.Fatalf("pages %v, list at resourceVersion %s %v: want the same names, page-4 and not page-9", paged, page.ResourceVersion, atRV)
	}
	_, err = cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{Limit: 2, Continue: "garbage"})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("bad continue token: want BadRequest, got %v", err)
	}
	_, err = cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ResourceVersion: "999999999", ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err == nil {
		t.Fatal("list at a future resourceVersion succeeded")
	}
}

func runInformer(t *testing.T, ns string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := clientset(t, true)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().ConfigMaps().Informer()
	var mu sync.Mutex
	seen := map[string]string{}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { mu.Lock(); seen[o.(*corev1.ConfigMap).Name] = "add"; mu.Unlock() },
		UpdateFunc: func(_, o any) {
			mu.Lock()
			seen[o.(*corev1.ConfigMap).Name] = "update"
			mu.Unlock()
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			mu.Lock()
			seen[o.(*corev1.ConfigMap).Name] = "delete"
			mu.Unlock()
		},
	})
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "before"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	for _, n := range []string{"after-1", "after-2"} {
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-1"}, Data: map[string]string{"x": "y"}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "after-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"before": "add", "after-1": "update", "after-2": "delete"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		ok := true
		for k, v := range want {
			if seen[k] != v {
				ok = false
			}
		}
		snapshot := fmt.Sprint(seen)
		mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("informer saw %s, want %v", snapshot, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClientGoInformerWatchList(t *testing.T) {
	if !clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		t.Fatal("WatchListClient is expected to be on by default in client-go v0.37")
	}
	runInformer(t, namespace(t))
}

func TestClientGoInformerListWatch(t *testing.T) {
	clientfeaturestesting.SetFeatureDuringTest(t, clientfeatures.WatchListClient, false)
	runInformer(t, namespace(t))
}

// TestWatchListBookmark checks the raw protocol: sendInitialEvents streams the
// existing objects, then a BOOKMARK annotated k8s.io/initial-events-end.
func TestWatchListBookmark(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := clientset(t, false)
	for i := range 3 {
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wl-%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	send := true
	w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{SendInitialEvents: &send, AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	added := 0
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added:
			if strings.HasPrefix(ev.Object.(*corev1.ConfigMap).Name, "wl-") {
				added++
			}
		case watch.Bookmark:
			cm := ev.Object.(*corev1.ConfigMap)
			if cm.Annotations[metav1.InitialEventsAnnotationKey] != "true" {
				continue
			}
			if added != 3 {
				t.Fatalf("initial-events-end after %d ADDED events, want 3", added)
			}
			return
		default:
			t.Fatalf("unexpected event %s: %v", ev.Type, ev.Object)
		}
	}
	t.Fatal("watch closed before the initial-events-end bookmark")
}

func TestClientGoDynamicAndMetadata(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := shared.RESTConfig(t)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "dyn"}, "data": map[string]any{"a": "1"}}}
	if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, "dyn", metav1.GetOptions{})
	if err != nil || got.Object["data"].(map[string]any)["a"] != "1" {
		t.Fatalf("dynamic get: %v %v", err, got)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	factory := metadatainformer.NewFilteredSharedInformerFactory(md, 0, ns, nil)
	inf := factory.ForResource(gvr).Informer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("metadata informer did not sync")
	}
	if _, exists, err := inf.GetStore().GetByKey(ns + "/dyn"); err != nil || !exists {
		t.Fatalf("metadata informer lacks dyn: %v %v", exists, err)
	}
	item, _, _ := inf.GetStore().GetByKey(ns + "/dyn")
	if pom, ok := item.(*metav1.PartialObjectMetadata); !ok || pom.Kind != "PartialObjectMetadata" && pom.Name != "dyn" {
		t.Fatalf("metadata informer item: %#v", item)
	}
}

func TestClientGoLeaderElection(t *testing.T) {
	ns := namespace(t)
	cs := clientset(t, true)
	leaders := make(chan string, 10)
	start := func(ctx context.Context, id string) {
		lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: "lock", Namespace: ns}, Client: cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id}}
		go leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { leaders <- id },
				OnStoppedLeading: func() {},
			},
		})
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	start(ctxA, "a")
	first := <-leaders
	if first != "a" {
		t.Fatalf("first leader %q", first)
	}
	start(ctxB, "b")
	select {
	case l := <-leaders:
		t.Fatalf("second leader %q while a holds the lease", l)
	case <-time.After(3 * time.Second):
	}
	cancelA()
	select {
	case l := <-leaders:
		if l != "b" {
			t.Fatalf("took over: %q", l)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("b never took over")
	}
	lease, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), "lock", metav1.GetOptions{})
	if err != nil || *lease.Spec.HolderIdentity != "b" {
		t.Fatalf("lease holder: %v %v", err, lease)
	}
}

// watchConfigMapsFromNow watches ns's ConfigMaps from the revision of a
// LIST, so that every event is of a write after it.
func watchConfigMapsFromNow(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) watch.Interface {
	t.Helper()
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWatchUnderWriteStorm checks that a watch sees every acknowledged write
// exactly once, in resourceVersion order, while 16 writers hammer the store.
func TestWatchUnderWriteStorm(t *testing.T) {
	ns := namespace(t)
	cs := clientset(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := watchConfigMapsFromNow(ctx, t, cs, ns)
	defer w.Stop()

	const writers, perWriter = 16, 40
	var mu sync.Mutex
	acked := map[string]bool{} // resourceVersions the server acknowledged
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range perWriter {
				name := fmt.Sprintf("s-%d-%d", i, j%10)
				var rv string
				if j < 10 {
					cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					rv = cm.ResourceVersion
				} else if j < 30 {
					cm, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"j": strconv.Itoa(j)}}, metav1.UpdateOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					rv = cm.ResourceVersion
				} else {
					var got corev1.ConfigMap
					err := cs.CoreV1().RESTClient().Delete().Namespace(ns).Resource("configmaps").Name(name).Do(ctx).Into(&got)
					if err != nil {
						t.Error(err)
						return
					}
					// A delete's own revision is only visible in the watch;
					// count it by object instead.
					rv = "delete/" + name
				}
				mu.Lock()
				acked[rv] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := writers * perWriter
	seen := map[string]bool{}
	var last uint64
	for len(seen) < total {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(seen), total)
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("unexpected watch object %#v", ev.Object)
			}
			if !strings.HasPrefix(cm.Name, "s-") {
				continue // e.g. kube-root-ca.crt, published by a controller
			}
			rv, _ := strconv.ParseUint(cm.ResourceVersion, 10, 64)
			if rv <= last {
				t.Fatalf("resourceVersion went backwards or repeated: %d after %d", rv, last)
			}
			last = rv
			key := cm.ResourceVersion
			if ev.Type == watch.Deleted {
				key = "delete/" + cm.Name
			}
			if seen[key] {
				t.Fatalf("duplicate event %s %s", ev.Type, key)
			}
			if !acked[key] {
				t.Fatalf("event %s %s was never acknowledged to a writer", ev.Type, key)
			}
			seen[key] = true
		case <-ctx.Done():
			var missing []string
			for k := range acked {
				if !seen[k] {
					missing = append(missing, k)
				}
			}
			sort.Strings(missing)
			t.Fatalf("timed out: %d acknowledged writes never seen, e.g. %v", len(missing), missing[:min(5, len(missing))])
		}
	}
}

// TestWatchOutlastsStalledReader: a collection watch whose reader stalls
// through a burst keeps its events instead of being closed by the watch
// cache. On a fresh server, upstream gives a watch room for 10 events
// beyond what HTTP/2 flow control holds (~4 MB), so the burst below (150
// ConfigMaps of 100 KB, ~62 of which fit) closes it; Skiff's patch to the
// cacher (third_party/patches/k8s.io/apiserver) gives collection watches
// room for 100 (1000 for pods), which is what keeps a busy 2-core server's
// informers from being closed and sent everything again.
func TestWatchOutlastsStalledReader(t *testing.T) {
	t.Parallel()
	// A fresh server: the watch cache sizes channels from the event rate
	// seen so far, which the shared server's other tests would raise.
	cs := freshServerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := "stalled"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := watchConfigMapsFromNow(ctx, t, cs, ns)
	defer w.Stop()

	const n = 150
	value := strings.Repeat("x", 100<<10)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := i; j < n; j += 4 {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%03d", j)}, Data: map[string]string{"v": value}}
				if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Past the cacher's dispatch budget (at most 100 ms) with nothing read.
	time.Sleep(time.Second)
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch was closed after %d of %d events", len(seen), n)
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("unexpected watch event %s %#v", ev.Type, ev.Object)
			}
			if strings.HasPrefix(cm.Name, "big-") {
				seen[cm.Name] = true
			}
		case <-ctx.Done():
			t.Fatalf("saw %d of %d events before the deadline", len(seen), n)
		}
	}
}

// TestWatchHistoryReleasedAfterBurst: once a burst of events is older than
// the watch cache's fresh-event window (75 s), the cache lets go of it
// (Skiff's patch to k8s.io/apiserver, 0002): the history shrinks to its
// newest 100 events, a watch from inside the window still resumes, and one
// from the expired part gets 410 Gone. Upstream keeps the whole burst until
// new events overwrite it.
func TestWatchHistoryReleasedAfterBurst(t *testing.T) {
	t.Parallel()
	// A fresh server: nothing else writes PodTemplates there.
	cs := freshServerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns, n = "burst", 600
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rvs := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := i; j < n; j += 4 {
				pt := &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t-%03d", j)}, Template: corev1.PodTemplateSpec{
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example/c"}}}}}
				created, err := cs.CoreV1().PodTemplates(ns).Create(ctx, pt, metav1.CreateOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				if rvs[j], err = strconv.ParseUint(created.ResourceVersion, 10, 64); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.Sort(rvs)
	capacity := func() int {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(raw)) {
			if v, ok := strings.CutPrefix(line, `watch_cache_capacity{group="",resource="podtemplates"} `); ok {
				c, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatalf("watch_cache_capacity: %v", err)
				}
				return c
			}
		}
		t.Fatal("no watch_cache_capacity metric for podtemplates")
		return 0
	}
	peak := capacity()
	if peak < n {
		t.Fatalf("the history holds room for %d events after a burst of %d", peak, n)
	}
	// The window (75 s), the trim interval (10 s) and some slack. A burst
	// that took longer than a trim interval (a loaded CI host) expires over
	// several trims, each dropping the part older than the window, so wait
	// for the end state rather than for the first shrink.
	deadline := time.Now().Add(2 * time.Minute)
	for c := capacity(); c > 200; c = capacity() {
		if time.Now().After(deadline) {
			t.Fatalf("2 minutes after a burst of %d events (peak room %d) the history still has room for %d, want at most 200 (the newest 100 kept)", n, peak, c)
		}
		time.Sleep(2 * time.Second)
	}
	// Resuming inside the kept history works; from the dropped part, 410.
	w, err := cs.CoreV1().PodTemplates(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatUint(rvs[n-50], 10)})
	if err != nil {
		t.Fatalf("watch from a kept resource version: %v", err)
	}
	select {
	case ev := <-w.ResultChan():
		if ev.Type != watch.Added {
			t.Errorf("watch from a kept resource version: first event %s %v, want an ADDED PodTemplate", ev.Type, ev.Object)
		}
	case <-ctx.Done():
		t.Error("watch from a kept resource version: no event")
	}
	w.Stop()
	w, err = cs.CoreV1().PodTemplates(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatUint(rvs[0], 10)})
	if err == nil {
		ev := <-w.ResultChan()
		w.Stop()
		if ev.Type != watch.Error || !apierrors.IsResourceExpired(apierrors.FromObject(ev.Object)) && !apierrors.IsGone(apierrors.FromObject(ev.Object)) {
			t.Errorf("watch from a dropped resource version: %s %v, want 410 Gone", ev.Type, ev.Object)
		}
	} else if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("watch from a dropped resource version: %v, want 410 Gone", err)
	}
}

// freshServerClient starts a server of the test's own (no agent, plus
// args), stopped when the test ends, for tests whose watch cache must see
// no other test's traffic, and returns a client of it.
func freshServerClient(t *testing.T, args ...string) *kubernetes.Clientset {
	t.Helper()
	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "srv"), append([]string{"--disable-agent"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	cs, err := kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestFeatureGateDefaults: Skiff's API server turns ConcurrentWatchObjectDecode
// off (server/apiserver: defaultFeatureGates), and --kube-apiserver-arg
// feature-gates given by the user win over it.
func TestFeatureGateDefaults(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	enabled := func(t *testing.T, cs *kubernetes.Clientset, gate string) string {
		t.Helper()
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		prefix := `kubernetes_feature_enabled{name="` + gate + `",`
		for line := range strings.Lines(string(raw)) {
			if strings.HasPrefix(line, prefix) {
				return strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:])
			}
		}
		t.Fatalf("no %s metric", prefix)
		return ""
	}
	tests := []struct {
		name string
		cs   func(t *testing.T) *kubernetes.Clientset
		gate string
		want string
	}{
		{"skiff default", func(t *testing.T) *kubernetes.Clientset { return clientset(t, false) }, "ConcurrentWatchObjectDecode", "0"},
		{"upstream default kept", func(t *testing.T) *kubernetes.Clientset { return clientset(t, false) }, "ListFromCacheSnapshot", "1"},
		{"user override", func(t *testing.T) *kubernetes.Clientset {
			return freshServerClient(t, "--kube-apiserver-arg=feature-gates=ConcurrentWatchObjectDecode=true")
		}, "ConcurrentWatchObjectDecode", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := enabled(t, tt.cs(t), tt.gate); got != tt.want {
				t.Errorf("kubernetes_feature_enabled %s = %s, want %s", tt.gate, got, tt.want)
			}
		})
	}
}
