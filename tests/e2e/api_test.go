package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// apiClient is an HTTP client authenticated as the admin user.
func apiClient(t *testing.T) (*http.Client, string) {
	t.Helper()
	cfg := shared.RESTConfig(t)
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, cfg.Host
}

func do(t *testing.T, c *http.Client, method, url, contentType, accept string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestAnonymousOnlyHealth(t *testing.T) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	base := fmt.Sprintf("https://127.0.0.1:%d", shared.Port)
	for _, p := range []string{"/healthz", "/livez", "/readyz", "/version"} {
		resp, body := do(t, c, "GET", base+p, "", "", nil)
		if resp.StatusCode != 200 {
			t.Errorf("anonymous GET %s: %d %s", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/api", "/apis", "/api/v1/namespaces", "/openapi/v2", "/metrics"} {
		resp, body := do(t, c, "GET", base+p, "", "", nil)
		if resp.StatusCode != 401 || !strings.Contains(string(body), `"reason":"Unauthorized"`) {
			t.Errorf("anonymous GET %s: %d %s, want 401 Unauthorized Status", p, resp.StatusCode, body)
		}
	}
}

func TestDiscoveryOpenAPITable(t *testing.T) {
	c, base := apiClient(t)
	// Aggregated discovery echoes its media type and varies on Accept.
	resp, body := do(t, c, "GET", base+"/apis", "", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json", nil)
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "apidiscovery.k8s.io") || !strings.Contains(resp.Header.Get("Vary"), "Accept") {
		t.Fatalf("aggregated discovery: content-type %q vary %q", ct, resp.Header.Get("Vary"))
	}
	if !strings.Contains(string(body), `"responseKind"`) || !strings.Contains(string(body), `"scale"`) {
		t.Fatal("aggregated discovery lacks responseKind or the scale subresource")
	}
	// OpenAPI v2 in protobuf and v3 per group-version with a content hash.
	resp, body = do(t, c, "GET", base+"/openapi/v2", "", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf", nil)
	if resp.StatusCode != 200 || len(body) < 100000 {
		t.Fatalf("openapi v2 protobuf: %d, %d bytes", resp.StatusCode, len(body))
	}
	// The built-in part of v2 is built on first request: it must hold the
	// kube-apiserver's types and paths beside the aggregator's and
	// apiextensions' own, and revalidate by ETag.
	resp, body = do(t, c, "GET", base+"/openapi/v2", "", "application/json", nil)
	var v2 struct {
		Paths       map[string]json.RawMessage `json:"paths"`
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal(body, &v2); err != nil {
		t.Fatalf("openapi v2 JSON: %d %v", resp.StatusCode, err)
	}
	for _, d := range []string{"io.k8s.api.apps.v1.Deployment", "io.k8s.api.core.v1.Pod",
		"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
		"io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService"} {
		if _, ok := v2.Definitions[d]; !ok {
			t.Errorf("openapi v2 lacks definition %s (%d definitions)", d, len(v2.Definitions))
		}
	}
	if _, ok := v2.Paths["/apis/apps/v1/namespaces/{namespace}/deployments"]; !ok {
		t.Errorf("openapi v2 lacks the deployments path (%d paths)", len(v2.Paths))
	}
	etag := resp.Header.Get("Etag")
	req, err := http.NewRequest("GET", base+"/openapi/v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("If-None-Match", etag)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("openapi v2 with If-None-Match %q: %d, want 304", etag, resp.StatusCode)
	}
	_, body = do(t, c, "GET", base+"/openapi/v3", "", "", nil)
	var root struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(body, &root); err != nil {
		t.Fatal(err)
	}
	apps, ok := root.Paths["apis/apps/v1"]
	if !ok || !strings.Contains(apps.ServerRelativeURL, "hash=") {
		t.Fatalf("openapi v3 root lacks apps/v1 with a hash: %+v", apps)
	}
	resp, body = do(t, c, "GET", base+apps.ServerRelativeURL, "", "application/json", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "io.k8s.api.apps.v1.Deployment") {
		t.Fatalf("openapi v3 apps/v1: %d", resp.StatusCode)
	}
	// Table and PartialObjectMetadata.
	_, body = do(t, c, "GET", base+"/api/v1/namespaces", "", "application/json;as=Table;v=v1;g=meta.k8s.io", nil)
	if !strings.Contains(string(body), `"kind":"Table"`) || !strings.Contains(string(body), `"name":"Status"`) {
		t.Fatalf("table: %.300s", body)
	}
	_, body = do(t, c, "GET", base+"/api/v1/namespaces/default", "", "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io", nil)
	if !strings.Contains(string(body), `"kind":"PartialObjectMetadata"`) || strings.Contains(string(body), `"spec"`) {
		t.Fatalf("partial object metadata: %.300s", body)
	}
}

func TestBadInput(t *testing.T) {
	ns := namespace(t)
	c, base := apiClient(t)
	url := base + "/api/v1/namespaces/" + ns + "/configmaps"
	cases := []struct {
		name        string
		contentType string
		body        []byte
		code        int
		want        string
	}{
		{"malformed JSON", "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap",`), 400, "BadRequest"},
		{"malformed YAML", "application/yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: [\n"), 400, "BadRequest"},
		{"garbage protobuf", "application/vnd.kubernetes.protobuf", []byte("k8s\x00\xff\xff\xff\xff"), 400, "BadRequest"},
		{"wrong kind", "application/json", []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`), 400, "BadRequest"},
		{"invalid name", "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"NOT valid"}}`), 422, "Invalid"},
		{"unknown field strict", "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}`), 400, "strict decoding error: unknown field"},
		{"too large", "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"` + strings.Repeat("x", 4<<20) + `"}}`), 413, "RequestEntityTooLarge"},
		{"deep nesting", "application/json", []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`), 400, "BadRequest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := url
			if strings.HasPrefix(tc.name, "unknown field") {
				u += "?fieldValidation=Strict"
			}
			resp, body := do(t, c, "POST", u, tc.contentType, "application/json", tc.body)
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) || !strings.Contains(string(body), `"kind":"Status"`) {
				t.Fatalf("%d %.400s; want %d with %q in a Status", resp.StatusCode, body, tc.code, tc.want)
			}
		})
	}
	// Nothing was stored, and the server still serves.
	out := kubectl(t, "get", "configmaps", "-n", ns, "-o", "name")
	if strings.Contains(out, "configmap/x") || strings.Contains(out, "big") || strings.Contains(out, "deep") {
		t.Fatalf("bad input was stored: %s", out)
	}
	// JSON patch resource exhaustion: a huge number of operations is refused.
	kubectl(t, "create", "configmap", "p", "-n", ns)
	var ops []string
	for i := range 20000 {
		ops = append(ops, fmt.Sprintf(`{"op":"add","path":"/metadata/labels/l%d","value":"v"}`, i))
	}
	resp, body := do(t, c, "PATCH", url+"/p", "application/json-patch+json", "application/json", []byte("["+strings.Join(ops, ",")+"]"))
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Fatalf("oversized JSON patch: %d %.300s", resp.StatusCode, body)
	}
	// Server-side apply is served (it is upstream's).
	resp, body = do(t, c, "PATCH", url+"/ssa?fieldManager=e2e", "application/apply-patch+yaml", "application/json",
		[]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: b}\n"))
	if resp.StatusCode != 201 || !strings.Contains(string(body), `"manager":"e2e"`) {
		t.Fatalf("server-side apply: %d %.300s", resp.StatusCode, body)
	}
}

// TestOpenAPIV3Hashes checks the v3 root's per-group-version hashes, which
// Skiff derives from the binary and the routes instead of the encoded
// documents (server/apiserver/openapi.go): stable across a restart, the
// document at the hashed URL immutable and complete, a stale hash
// redirected to the current URL as upstream's handler3 does.
func TestOpenAPIV3Hashes(t *testing.T) {
	t.Parallel()
	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "openapi"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// The server keeps its port and admin credentials across restarts.
	cfg := s.RESTConfig(t)
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	root := func() map[string]string {
		_, body := do(t, c, "GET", cfg.Host+"/openapi/v3", "", "", nil)
		var r struct {
			Paths map[string]struct {
				ServerRelativeURL string `json:"serverRelativeURL"`
			} `json:"paths"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("openapi v3 root: %v: %.200s", err, body)
		}
		urls := map[string]string{}
		for gv, p := range r.Paths {
			urls[gv] = p.ServerRelativeURL
		}
		return urls
	}
	before := root()
	apps := before["apis/apps/v1"]
	if !strings.Contains(apps, "hash=") || before["api/v1"] == "" || before["apis/apiextensions.k8s.io/v1"] == "" ||
		!strings.Contains(before["apis/apiregistration.k8s.io/v1"], "hash=") {
		t.Fatalf("openapi v3 root lacks built-in group-versions with hashes: %v", before)
	}
	if before["api/v1"] == apps {
		t.Fatal("two group-versions share a URL")
	}
	resp, body := do(t, c, "GET", cfg.Host+apps, "", "application/json", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") ||
		!strings.Contains(string(body), `"io.k8s.api.apps.v1.Deployment"`) || !strings.Contains(string(body), `"/apis/apps/v1/namespaces/{namespace}/deployments"`) {
		t.Fatalf("GET %s: %d, Cache-Control %q, %d bytes", apps, resp.StatusCode, resp.Header.Get("Cache-Control"), len(body))
	}
	resp, body = do(t, c, "GET", cfg.Host+"/openapi/v3/apis/apps/v1", "", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf", nil)
	if resp.StatusCode != 200 || strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || len(body) < 1000 {
		t.Fatalf("GET apps/v1 without hash as protobuf: %d, Cache-Control %q, %d bytes", resp.StatusCode, resp.Header.Get("Cache-Control"), len(body))
	}
	resp, _ = do(t, c, "GET", cfg.Host+"/openapi/v3/apis/apps/v1?hash=0123", "", "application/json", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != apps {
		t.Fatalf("stale hash: %d to %q, want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), apps)
	}

	// A CRD's group-version: listed (through the aggregator's copy of the
	// apiextensions server's root, refreshed every second) once it is
	// Established, its document built on request; a change of its spec
	// gives a new hash, a change of its status does not.
	const crdGV = "apis/example.skiff.dev/v1"
	waitRoot := func(what string, ok func(map[string]string) bool) map[string]string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := root()
			if ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("openapi v3 root: %s: %v", what, r[crdGV])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	s.MustKubectl(t, widgetCRD, "apply", "-f", "-")
	s.MustKubectl(t, "", "wait", "--for=condition=Established", "crd/widgets.example.skiff.dev", "--timeout=30s")
	widgets := waitRoot("widgets listed", func(r map[string]string) bool { return r[crdGV] != "" })[crdGV]
	resp, body = do(t, c, "GET", cfg.Host+widgets, "", "application/json", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") ||
		!strings.Contains(string(body), `"dev.skiff.example.v1.Widget"`) || !strings.Contains(string(body), "How big the widget is.") {
		t.Fatalf("GET %s: %d, Cache-Control %q: %.300s", widgets, resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}
	s.MustKubectl(t, "", "label", "crd", "widgets.example.skiff.dev", "e2e=relabelled")
	time.Sleep(1500 * time.Millisecond) // past an aggregator refresh
	if got := root()[crdGV]; got != widgets {
		t.Errorf("a label moved widgets from %q to %q", widgets, got)
	}
	s.MustKubectl(t, strings.Replace(widgetCRD, "How big the widget is.", "How large the widget is.", 1), "apply", "-f", "-")
	changed := waitRoot("a new hash after a spec change", func(r map[string]string) bool { return r[crdGV] != "" && r[crdGV] != widgets })[crdGV]
	resp, _ = do(t, c, "GET", cfg.Host+widgets, "", "application/json", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != changed {
		t.Fatalf("stale CRD hash: %d to %q, want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), changed)
	}
	if _, body = do(t, c, "GET", cfg.Host+changed, "", "application/json", nil); !strings.Contains(string(body), "How large the widget is.") {
		t.Fatalf("GET %s: the changed description is missing", changed)
	}
	before = root()

	s.Stop()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	after := waitRoot("widgets listed after a restart", func(r map[string]string) bool { return r[crdGV] != "" })
	for gv, u := range before {
		if after[gv] != u {
			t.Errorf("after a restart %s is at %q, was %q", gv, after[gv], u)
		}
	}
	s.MustKubectl(t, "", "delete", "crd", "widgets.example.skiff.dev", "--timeout=60s")
	waitRoot("widgets gone after the CRD's deletion", func(r map[string]string) bool { return r[crdGV] == "" })
	if resp, _ = do(t, c, "GET", cfg.Host+changed, "", "application/json", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET %s after the CRD's deletion: %d", changed, resp.StatusCode)
	}

	// Without DaemonSets apps/v1 is another document: another hash; the
	// other group-versions keep theirs.
	s.Stop()
	s.Args = append(s.Args, "--kube-apiserver-arg=runtime-config=apps/v1/daemonsets=false")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	after = root()
	if after["apis/apps/v1"] == "" || after["apis/apps/v1"] == before["apis/apps/v1"] {
		t.Errorf("apps/v1 without daemonsets is at %q, as with them", after["apis/apps/v1"])
	}
	if after["apis/batch/v1"] != before["apis/batch/v1"] {
		t.Errorf("batch/v1 moved from %q to %q", before["apis/batch/v1"], after["apis/batch/v1"])
	}

	// Feature gates shape the definitions (OpenAPIEnums strips enums).
	s.Stop()
	s.Args = append(s.Args, "--kube-apiserver-arg=feature-gates=OpenAPIEnums=false")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	gated := root()
	if gated["apis/batch/v1"] == "" || gated["apis/batch/v1"] == after["apis/batch/v1"] {
		t.Errorf("batch/v1 with another feature gate is at %q, as before", gated["apis/batch/v1"])
	}
}
