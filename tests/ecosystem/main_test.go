// Package ecosystem tests that the tools people point at a cluster work
// unmodified against the real skiff binary: Helm 3 used as a library, an
// operator built on controller-runtime, and in-cluster clients that
// authenticate with ServiceAccount tokens. It is its own test binary so the
// lighter tests/e2e binary does not link Helm.
package ecosystem

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// shared is the server every test in this package uses.
var shared *testserver.Server

func TestMain(m *testing.M) {
	os.Exit(testserver.Main(m, "ecosystem", "../..", func(s *testserver.Server) { shared = s }))
}

// admin returns a typed client for the admin user.
func admin(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(shared.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// namespace creates a uniquely named namespace and deletes it after the test.
func namespace(t *testing.T) string {
	t.Helper()
	name := testserver.UniqueName(t, 50)
	cs := admin(t)
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// kubectlIn runs the embedded kubectl with stdin and fails the test on error.
func kubectlIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	return shared.MustKubectl(t, stdin, args...)
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteCRD deletes a CRD at the end of a test and waits until it is gone,
// so a repeated run (-count) does not meet it terminating.
func deleteCRD(t *testing.T, name string) {
	t.Cleanup(func() {
		gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		crds := dynamicClient(t).Resource(gvr)
		if err := crds.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete CRD %s: %v", name, err)
			return
		}
		eventually(t, 60*time.Second, "CRD "+name+" deleted", func() error {
			_, err := crds.Get(context.Background(), name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("get: %v", err)
		})
	})
}

// requestLog records the requests a client sends, to check which API paths
// and wire formats a library really uses.
type requestLog struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, Query, Accept, ContentType string
}

func (l *requestLog) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			l.mu.Lock()
			l.reqs = append(l.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Accept"), r.Header.Get("Content-Type")})
			l.mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// find returns the recorded requests matching f.
func (l *requestLog) find(f func(recorded) bool) []recorded {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []recorded
	for _, r := range l.reqs {
		if f(r) {
			out = append(out, r)
		}
	}
	return out
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
