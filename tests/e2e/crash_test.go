package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// TestCrashDuringWriteStorm kills the server with SIGKILL while 16 clients
// write, restarts it, and checks that every acknowledged write survived,
// nothing is half-applied, and old resourceVersions answer 410 Expired.
func TestCrashDuringWriteStorm(t *testing.T) {
	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "crash"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	cs, err := kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "storm"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "first"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// An informer that lives through the crash: after the restart its watch
	// resumes from a resourceVersion older than the new watch window, gets
	// 410 Gone, relists, and carries on.
	infCtx, stopInformer := context.WithCancel(ctx)
	defer stopInformer()
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().ConfigMaps().Informer()
	factory.Start(infCtx.Done())
	if !cache.WaitForCacheSync(infCtx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}

	var (
		mu     sync.Mutex
		acked  = map[string]string{} // name -> data value the server acknowledged
		writes atomic.Int64
		wg     sync.WaitGroup
	)
	stormCtx, stopStorm := context.WithCancel(ctx)
	for i := range 16 {
		wg.Go(func() {
			for j := 0; stormCtx.Err() == nil; j++ {
				name := fmt.Sprintf("w%d-%d", i, j)
				val := fmt.Sprintf("payload-%d-%d", i, j)
				_, err := cs.CoreV1().ConfigMaps(ns).Create(stormCtx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": val}}, metav1.CreateOptions{})
				if err != nil {
					return // the server died; this write is not acknowledged
				}
				writes.Add(1)
				mu.Lock()
				acked[name] = val
				mu.Unlock()
			}
		})
	}
	for writes.Load() < 300 {
		if ctx.Err() != nil {
			t.Fatal("storm made no progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	stopStorm()
	wg.Wait()
	t.Logf("killed the server after %d acknowledged writes", len(acked))

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cs, err = kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list after restart: %v", err)
	}
	stored := map[string]string{}
	for _, cm := range list.Items {
		stored[cm.Name] = cm.Data["v"]
	}
	for name, val := range acked {
		if got, ok := stored[name]; !ok || got != val {
			t.Errorf("acknowledged write %s lost or changed after crash: %q ok=%v", name, got, ok)
		}
	}
	for name, val := range stored {
		if name != "first" && name != "kube-root-ca.crt" && val == "" {
			t.Errorf("half-applied object %s without data", name)
		}
	}
	// The store keeps working: writes and reads after recovery.
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, ok, _ := inf.GetStore().GetByKey(ns + "/after"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("informer never recovered after the restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopInformer()
	// A watch from before the restart is older than the new watch window.
	w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			t.Fatal(err)
		}
		return
	}
	defer w.Stop()
	select {
	case ev := <-w.ResultChan():
		status, _ := ev.Object.(*metav1.Status)
		if ev.Type != watch.Error || status == nil || status.Code != 410 || status.Reason != metav1.StatusReasonExpired {
			t.Fatalf("watch from a pre-restart resourceVersion: want 410 Expired, got %s %#v", ev.Type, ev.Object)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no 410 for a watch from a pre-restart resourceVersion")
	}
}

// TestCrashRestartTakesLeases: a server killed while its controller
// manager and scheduler hold their leases (as after a power loss) runs
// them again as soon as it is back, not after the 60 s the dead holder's
// leases would otherwise still run.
func TestCrashRestartTakesLeases(t *testing.T) {
	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "leases"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := []string{"kube-controller-manager", "kube-scheduler"}
	holders := func(cs kubernetes.Interface) map[string]string {
		h := map[string]string{}
		for _, n := range names {
			l, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, n, metav1.GetOptions{})
			if err == nil && l.Spec.HolderIdentity != nil {
				h[n] = *l.Spec.HolderIdentity
			}
		}
		return h
	}
	// waitHeld waits (at most half the lease duration) until every lease
	// is held by someone other than before.
	waitHeld := func(cs kubernetes.Interface, before map[string]string) map[string]string {
		deadline := time.Now().Add(30 * time.Second)
		for {
			h := holders(cs)
			ok := true
			for _, n := range names {
				ok = ok && h[n] != "" && h[n] != before[n]
			}
			if ok {
				return h
			}
			if time.Now().After(deadline) {
				t.Fatalf("leases not taken: %v (before: %v)\n%s", h, before, s.Tail())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	cs, err := kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	first := waitHeld(cs, nil)
	s.Kill()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cs, err = kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	waitHeld(cs, first)
}
