package cachelw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	appsinstall "k8s.io/kubernetes/pkg/apis/apps/install"
	coreinstall "k8s.io/kubernetes/pkg/apis/core/install"

	"github.com/skiff-sh/skiff/server/apiserver/cachelw"
)

// TestResource: a client-go type maps to its resource when the server's
// scheme converts to its version, irregular plurals included, and not
// when the server has no internal type for it.
func TestResource(t *testing.T) {
	server := runtime.NewScheme()
	coreinstall.Install(server)
	appsinstall.Install(server)
	for _, tc := range []struct {
		obj  runtime.Object
		want schema.GroupVersionResource
		ok   bool
	}{
		{&corev1.Pod{}, corev1.SchemeGroupVersion.WithResource("pods"), true},
		{&corev1.Endpoints{}, corev1.SchemeGroupVersion.WithResource("endpoints"), true},
		{&corev1.ResourceQuota{}, corev1.SchemeGroupVersion.WithResource("resourcequotas"), true},
		{&corev1.PersistentVolumeClaim{}, corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims"), true},
		{&appsv1.Deployment{}, appsv1.SchemeGroupVersion.WithResource("deployments"), true},
		{&appsv1.DaemonSet{}, appsv1.SchemeGroupVersion.WithResource("daemonsets"), true},
		// Known to client-go, not to this server scheme.
		{&networkingv1.Ingress{}, schema.GroupVersionResource{}, false},
		// Not a client-go type at all.
		{&metav1.Status{Reason: "x"}, schema.GroupVersionResource{}, false},
	} {
		got, ok := cachelw.Resource(tc.obj, clientgoscheme.Scheme, server)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Resource(%T) = %v, %v; want %v, %v", tc.obj, got, ok, tc.want, tc.ok)
		}
	}
}

// TestGroupGetter: a ListWatch made with the core client of a clientset
// lists and watches another group's paths and decodes its types.
func TestGroupGetter(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path+"?watch="+r.URL.Query().Get("watch"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			_, _ = w.Write([]byte(`{"type":"ADDED","object":{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"b","namespace":"n","resourceVersion":"2"}}}` + "\n"))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"DeploymentList","apiVersion":"apps/v1","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a","namespace":"n"}}]}`))
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	gv := appsv1.SchemeGroupVersion
	lw := cache.NewFilteredListWatchFromClient(cachelw.GroupGetter(cs.CoreV1().RESTClient(), gv), "deployments", metav1.NamespaceAll, func(*metav1.ListOptions) {})
	ctx := context.Background()
	list, err := lw.ListWithContext(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dl, ok := list.(*appsv1.DeploymentList)
	if !ok || len(dl.Items) != 1 || dl.Items[0].Name != "a" {
		t.Fatalf("list = %#v, want a DeploymentList of a", list)
	}
	w, err := lw.WatchWithContext(ctx, metav1.ListOptions{ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	e := <-w.ResultChan()
	w.Stop()
	if d, ok := e.Object.(*appsv1.Deployment); !ok || d.Name != "b" {
		t.Fatalf("watch event %v %#v, want a Deployment b", e.Type, e.Object)
	}
	// Core's own paths keep their /api prefix (only the path matters
	// here: the stub answers with deployments).
	_, _ = cache.NewFilteredListWatchFromClient(cachelw.GroupGetter(cs.CoreV1().RESTClient(), corev1.SchemeGroupVersion), "pods", "ns", func(*metav1.ListOptions) {}).ListWithContext(ctx, metav1.ListOptions{})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/apis/apps/v1/deployments?watch=", "/apis/apps/v1/deployments?watch=true", "/api/v1/namespaces/ns/pods?watch="}
	if len(paths) != len(want) {
		t.Fatalf("requests %q, want %q", paths, want)
	}
	for i := range want {
		if paths[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, paths[i], want[i])
		}
	}
}
