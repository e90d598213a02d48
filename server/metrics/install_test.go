package metrics

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/sets"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	generatedopenapi "k8s.io/kubernetes/pkg/generated/openapi"
	"k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// newGenericServer is a minimal, never-started generic API server (no
// authentication or authorization, no OpenAPI).
func newGenericServer(t *testing.T) *genericapiserver.GenericAPIServer {
	t.Helper()
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	config := genericapiserver.NewConfig(serializer.NewCodecFactory(scheme))
	config.ExternalAddress = "127.0.0.1:6443" // a name only; nothing listens
	config.LegacyAPIGroupPrefixes = sets.NewString("/api")
	config.LoopbackClientConfig = &rest.Config{}
	config.EffectiveVersion = basecompatibility.NewEffectiveVersionFromString("", "", "")
	// Server-side apply needs OpenAPI models of the installed types.
	config.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions,
		openapinamer.NewDefinitionNamer(scheme))
	s, err := config.Complete(nil).New("metrics-test", genericapiserver.NewEmptyDelegate())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInstall(t *testing.T) {
	s := newGenericServer(t)

	// The scraper Install builds is private; route its summaries through a
	// fake kubelet proxy.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		node := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/v1/nodes/"), "/proxy/stats/summary")
		_ = json.NewEncoder(w).Encode(summary(node, 250_000_000, 1<<30,
			pod("default", "web-"+node, ctr("app", 1_000_000, 1<<20, t0))))
	}))
	defer srv.Close()
	real, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubeletClientset{Clientset: fake.NewClientset(k8sNode("n1", map[string]string{"role": "cp"}), k8sNode("n2", nil)), rc: real.CoreV1().RESTClient()}
	if err := Install(s, func() kubernetes.Interface { return cs }); err != nil {
		t.Fatalf("Install: %v", err)
	}

	get := func(path string) (int, []byte) {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		s.Handler.ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}
	// getJSON GETs path, which must answer 200, into out and returns the body.
	getJSON := func(what, path string, out any) []byte {
		t.Helper()
		code, body := get(path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", what, code, body)
		}
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatal(err)
		}
		return body
	}

	var rl metav1.APIResourceList
	getJSON("discovery", "/apis/metrics.k8s.io/v1beta1", &rl)
	resources := map[string]metav1.APIResource{}
	for _, r := range rl.APIResources {
		resources[r.Name] = r
	}
	if n, ok := resources["nodes"]; !ok || n.Namespaced || n.Kind != "NodeMetrics" || n.SingularName != "node" {
		t.Errorf("nodes resource = %+v (ok %v)", n, ok)
	}
	if p, ok := resources["pods"]; !ok || !p.Namespaced || p.Kind != "PodMetrics" || p.SingularName != "pod" {
		t.Errorf("pods resource = %+v (ok %v)", p, ok)
	}

	var nodes v1beta1.NodeMetricsList
	body := getJSON("list nodes", "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=role%3Dcp", &nodes)
	if nodes.Kind != "NodeMetricsList" || len(nodes.Items) != 1 || nodes.Items[0].Name != "n1" {
		t.Fatalf("nodes = %s", body)
	}
	if c := nodes.Items[0].Usage.Cpu(); c.MilliValue() != 250 {
		t.Errorf("cpu = %s", c.String())
	}
	if nodes.Items[0].Window.Duration != 10*time.Second {
		t.Errorf("window = %v", nodes.Items[0].Window)
	}

	var pm v1beta1.PodMetrics
	body = getJSON("get pod", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-n2", &pm)
	if pm.Kind != "PodMetrics" || pm.Namespace != "default" || pm.Name != "web-n2" || len(pm.Containers) != 1 {
		t.Errorf("pod metrics = %s", body)
	}

	code, body := get("/apis/metrics.k8s.io/v1beta1/nodes/nope")
	if code != http.StatusNotFound {
		t.Errorf("unknown node: %d %s", code, body)
	}
	code, body = get("/apis/metrics.k8s.io/v1beta1/namespaces/other/pods/web-n1")
	if code != http.StatusNotFound {
		t.Errorf("pod in other namespace: %d %s", code, body)
	}
}

func TestInstallNilClient(t *testing.T) {
	s := newGenericServer(t)
	if err := Install(s, func() kubernetes.Interface { return nil }); err != nil {
		t.Fatalf("Install: %v", err)
	}
	for _, path := range []string{"/apis/metrics.k8s.io/v1beta1/nodes", "/apis/metrics.k8s.io/v1beta1/pods"} {
		rec := httptest.NewRecorder()
		s.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || len(l.Items) != 0 {
			t.Errorf("%s: %s (%v)", path, rec.Body, err)
		}
	}
}
