package crdopenapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	"k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions"
	listers "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/controller/openapiv3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kube-openapi/pkg/handler3"
)

// crd returns an Established CRD of group with one served version per
// entry of versions (a "-" suffix marks a version that is not served).
func crd(group, kind string, gen int64, versions ...string) *apiextensionsv1.CustomResourceDefinition {
	plural := strings.ToLower(kind) + "s"
	c := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group, UID: types.UID("uid-" + plural + "." + group),
			Generation: gen, ResourceVersion: "1"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind)},
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
			{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}},
	}
	for i, v := range versions {
		served := !strings.HasSuffix(v, "-")
		c.Spec.Versions = append(c.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{
			Name: strings.TrimSuffix(v, "-"), Served: served, Storage: i == 0,
			Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
				Type: "object",
				Properties: map[string]apiextensionsv1.JSONSchemaProps{
					"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"image":    {Type: "string", Description: "Image to run."},
						"replicas": {Type: "integer", Default: &apiextensionsv1.JSON{Raw: []byte("1")}},
					}},
				},
			}},
		})
	}
	return c
}

func notEstablished(c *apiextensionsv1.CustomResourceDefinition) *apiextensionsv1.CustomResourceDefinition {
	c = c.DeepCopy()
	c.Status.Conditions = nil
	return c
}

func lister(t *testing.T, crds ...*apiextensionsv1.CustomResourceDefinition) listers.CustomResourceDefinitionLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, c := range crds {
		if err := idx.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	return listers.NewCustomResourceDefinitionLister(idx)
}

// static is one fixed group-version of the server's own.
type static struct{ served int }

func (s *static) Paths() map[string]string {
	return map[string]string{"apis/apiextensions.k8s.io/v1": "/openapi/v3/apis/apiextensions.k8s.io/v1?hash=STATIC"}
}

func (s *static) ServeGroupVersion(w http.ResponseWriter, r *http.Request) {
	s.served++
	w.Write([]byte("static"))
}

func get(t *testing.T, h *Handler, url string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	if url == "/openapi/v3" {
		h.ServeRoot(w, r)
	} else {
		h.ServeGroupVersion(w, r)
	}
	return w
}

func root(t *testing.T, h *Handler) map[string]string {
	t.Helper()
	w := get(t, h, "/openapi/v3")
	if w.Code != http.StatusOK {
		t.Fatalf("root: %d %s", w.Code, w.Body)
	}
	var d handler3.OpenAPIV3Discovery
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil {
		t.Fatalf("root: %v", err)
	}
	out := map[string]string{}
	for p, gv := range d.Paths {
		out[p] = gv.ServerRelativeURL
	}
	return out
}

func TestRootLists(t *testing.T) {
	for _, tc := range []struct {
		name string
		crds []*apiextensionsv1.CustomResourceDefinition
		want []string
	}{
		{"no CRDs", nil, []string{"apis/apiextensions.k8s.io/v1"}},
		{"served versions of Established CRDs", []*apiextensionsv1.CustomResourceDefinition{
			crd("a.example.com", "Widget", 1, "v1", "v1beta1", "v1alpha1-"),
			crd("a.example.com", "Gadget", 1, "v1"),
			notEstablished(crd("b.example.com", "Sprocket", 1, "v1")),
		}, []string{"apis/apiextensions.k8s.io/v1", "apis/a.example.com/v1", "apis/a.example.com/v1beta1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := root(t, New(&static{}, lister(t, tc.crds...), "id", true))
			if len(got) != len(tc.want) {
				t.Errorf("root lists %v, want %v", got, tc.want)
			}
			for _, p := range tc.want {
				if !strings.HasPrefix(got[p], "/openapi/v3/"+p+"?hash=") {
					t.Errorf("root: %s -> %q", p, got[p])
				}
			}
		})
	}
}

func TestHashes(t *testing.T) {
	widget, gadget := crd("a.example.com", "Widget", 1, "v1", "v2"), crd("a.example.com", "Gadget", 1, "v1")
	base := root(t, New(&static{}, lister(t, widget, gadget), "id", true))
	statusOnly := widget.DeepCopy()
	statusOnly.ResourceVersion = "2"
	statusOnly.Status.AcceptedNames.Kind = "Widget"
	specChanged := widget.DeepCopy()
	specChanged.Generation = 2
	recreated := widget.DeepCopy()
	recreated.UID = "other"
	for _, tc := range []struct {
		name     string
		crds     []*apiextensionsv1.CustomResourceDefinition
		identity string
		changed  []string // group-versions whose hash differs from base
	}{
		{"same input", []*apiextensionsv1.CustomResourceDefinition{gadget, widget}, "id", nil},
		{"status and resourceVersion only", []*apiextensionsv1.CustomResourceDefinition{statusOnly, gadget}, "id", nil},
		{"spec changed", []*apiextensionsv1.CustomResourceDefinition{specChanged, gadget}, "id", []string{"apis/a.example.com/v1", "apis/a.example.com/v2"}},
		{"recreated", []*apiextensionsv1.CustomResourceDefinition{recreated, gadget}, "id", []string{"apis/a.example.com/v1", "apis/a.example.com/v2"}},
		{"CRD removed from one group-version", []*apiextensionsv1.CustomResourceDefinition{widget}, "id", []string{"apis/a.example.com/v1"}},
		{"other binary or configuration", []*apiextensionsv1.CustomResourceDefinition{widget, gadget}, "id2", []string{"apis/a.example.com/v1", "apis/a.example.com/v2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := root(t, New(&static{}, lister(t, tc.crds...), tc.identity, true))
			changed := map[string]bool{}
			for _, p := range tc.changed {
				changed[p] = true
			}
			for _, p := range []string{"apis/a.example.com/v1", "apis/a.example.com/v2"} {
				if (got[p] != base[p]) != changed[p] {
					t.Errorf("%s: %q, base %q; want changed=%t", p, got[p], base[p], changed[p])
				}
			}
		})
	}
}

func TestServeGroupVersion(t *testing.T) {
	st := &static{}
	h := New(st, lister(t, crd("a.example.com", "Widget", 1, "v1")), "id", true)
	url := root(t, h)["apis/a.example.com/v1"]
	stale := url[:strings.Index(url, "?")] + "?hash=0123"

	w := get(t, h, url)
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "public, immutable" || w.Header().Get("Etag") == "" {
		t.Fatalf("current hash: %d %v", w.Code, w.Header())
	}
	var doc struct {
		Components struct{ Schemas map[string]json.RawMessage }
		Paths      map[string]json.RawMessage
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.Components.Schemas["com.example.a.v1.Widget"]; !ok {
		t.Errorf("document lacks the Widget schema: %s", w.Body.String()[:200])
	}
	if _, ok := doc.Paths["/apis/a.example.com/v1/namespaces/{namespace}/widgets/{name}/status"]; !ok {
		t.Errorf("document lacks the status path")
	}
	etag := w.Header().Get("Etag")

	for _, tc := range []struct {
		name     string
		url      string
		header   []string
		code     int
		location string
		ctype    string
		cache    string
	}{
		{"no hash", url[:strings.Index(url, "?")], nil, http.StatusOK, "", "application/json", ""},
		{"stale hash", stale, nil, http.StatusMovedPermanently, url, "", ""},
		{"protobuf", url, []string{"Accept", "application/com.github.proto-openapi.spec.v3@v1.0+protobuf"}, http.StatusOK, "",
			"application/com.github.proto-openapi.spec.v3.v1.0+protobuf", "public, immutable"},
		{"revalidation", url, []string{"If-None-Match", etag}, http.StatusNotModified, "", "", "public, immutable"},
		{"not acceptable is not cached", url, []string{"Accept", "text/html"}, http.StatusNotAcceptable, "", "", ""},
		{"unknown group-version", "/openapi/v3/apis/b.example.com/v1", nil, http.StatusNotFound, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := get(t, h, tc.url, tc.header...)
			if w.Code != tc.code {
				t.Fatalf("code %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if got := w.Header().Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if got := w.Header().Get("Content-Type"); tc.ctype != "" && got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := w.Header().Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
		})
	}
	if w := get(t, h, "/openapi/v3/apis/apiextensions.k8s.io/v1?hash=STATIC"); w.Body.String() != "static" || st.served != 1 {
		t.Errorf("static group-version not delegated: %q", w.Body)
	}
}

// TestSameDocumentAsUpstream compares each group-version's document with
// the one upstream's CRD OpenAPI v3 controller serves for the same CRDs.
func TestSameDocumentAsUpstream(t *testing.T) {
	crds := []*apiextensionsv1.CustomResourceDefinition{
		crd("a.example.com", "Widget", 1, "v1", "v2"),
		crd("a.example.com", "Gadget", 3, "v1"),
		crd("b.example.com", "Sprocket", 1, "v1beta1"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewSimpleClientset()
	for _, c := range crds {
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	informers := externalversions.NewSharedInformerFactory(client, 0)
	inf := informers.Apiextensions().V1().CustomResourceDefinitions()
	upstream := handler3.NewOpenAPIService()
	controller := openapiv3.NewController(inf)
	informers.Start(ctx.Done())
	go controller.Run(upstream, ctx.Done())

	h := New(&static{}, inf.Lister(), "id", true)
	paths := []string{"apis/a.example.com/v1", "apis/a.example.com/v2", "apis/b.example.com/v1beta1"}
	for _, p := range paths {
		var want []byte
		deadline := time.Now().Add(10 * time.Second)
		for {
			w := httptest.NewRecorder()
			upstream.HandleGroupVersion(w, httptest.NewRequest(http.MethodGet, "/openapi/v3/"+p, nil))
			// handler3 writes nothing (a 200 to the recorder) for a
			// group-version it does not have yet; both CRDs of
			// a.example.com/v1 must be merged in.
			if w.Code == http.StatusOK && w.Body.Len() > 0 &&
				(p != "apis/a.example.com/v1" || strings.Contains(w.Body.String(), "Gadget") && strings.Contains(w.Body.String(), "Widget")) {
				want = w.Body.Bytes()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("upstream controller did not serve %s: %d", p, w.Code)
			}
			time.Sleep(10 * time.Millisecond)
		}
		w := get(t, h, "/openapi/v3/"+p)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", p, w.Code, w.Body)
		}
		if w.Body.String() != string(want) {
			t.Errorf("%s: document differs from upstream's (%d vs %d bytes)", p, w.Body.Len(), len(want))
		}
	}
}
