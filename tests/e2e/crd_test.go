package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"

	"github.com/skiff-sh/skiff/tests/testserver"
)

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.skiff.dev
spec:
  group: example.skiff.dev
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg], categories: [all]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: Desired widget.
            properties:
              size: {type: integer, minimum: 1, description: How big the widget is.}
              color: {type: string, default: blue}
`

// TestCustomResources is a first check that CRDs work on Skiff's storage
// (the full CRD, Helm and operator story is the next issue).
func TestCustomResources(t *testing.T) {
	ns := namespace(t)
	kubectlIn(t, widgetCRD, "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "crd", "widgets.example.skiff.dev", "--wait=false") })
	kubectl(t, "wait", "--for=condition=Established", "crd/widgets.example.skiff.dev", "--timeout=30s")
	kubectlIn(t, "apiVersion: example.skiff.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, extra: dropped}\n", "apply", "-n", ns, "-f", "-", "--validate=false")
	out := kubectl(t, "get", "wg", "-n", ns)
	mustContain(t, out, "NAME", "SIZE", "w1", "3")
	// Defaults from the schema, pruning of unknown fields.
	got := kubectl(t, "get", "widget", "w1", "-n", ns, "-o", "jsonpath={.spec.color}/{.spec.extra}")
	if got != "blue/" {
		t.Fatalf("defaulting/pruning: %q", got)
	}
	mustContain(t, kubectl(t, "explain", "widgets.spec.size"), "How big the widget is.")
	// Schema validation: 422 with the field path; nothing stored.
	errOut := kubectlFail(t, "apiVersion: example.skiff.dev/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n", "apply", "-n", ns, "-f", "-")
	mustContain(t, errOut, "spec.size", "should be greater than or equal to 1")
	// Strategic merge patch is refused for custom resources, as upstream.
	errOut = kubectlFail(t, "", "patch", "widget", "w1", "-n", ns, "--type=strategic", "-p", `{"spec":{"size":4}}`)
	mustContain(t, errOut, "application/strategic-merge-patch+json is not supported", "accepted media types include")
	kubectl(t, "patch", "widget", "w1", "-n", ns, "--type=merge", "-p", `{"spec":{"size":4}}`)
	// Deleting the CRD removes its objects.
	kubectl(t, "delete", "crd", "widgets.example.skiff.dev", "--wait", "--timeout=60s")
	if _, errOut, err := shared.Kubectl(t, "", "get", "widgets", "-n", ns); err == nil || !(strings.Contains(errOut, "the server doesn't have a resource type") || strings.Contains(errOut, "the server could not find the requested resource")) {
		t.Fatalf("widgets still served after CRD deletion: %v %s", err, errOut)
	}
}

// TestCRDDiscoveryWhenEstablished checks the order a client relies on when it
// installs a CRD and then a custom resource (Helm's crds/, kubectl apply after
// kubectl wait --for=condition=Established): once a read shows a CRD
// Established, discovery already lists its group, so a fresh REST mapping
// finds the kind. Each round creates a CRD in a group of its own, reads it in
// a tight loop until it is Established, and asks aggregated discovery at once.
func TestCRDDiscoveryWhenEstablished(t *testing.T) {
	ctx := context.Background()
	cfg := shared.RESTConfig(t)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	const rounds = 25
	run := testserver.UniqueName(t, 8) // a repeated run (-count) meets no CRD still terminating
	for i := range rounds {
		group := fmt.Sprintf("%s-%d.example.skiff.dev", run, i)
		name := "gadgets." + group
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1",
			"kind":       "CustomResourceDefinition",
			"metadata":   map[string]any{"name": name},
			"spec": map[string]any{
				"group": group,
				"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
				"scope": "Namespaced",
				"versions": []any{map[string]any{
					"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
				}},
			},
		}}
		if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", name, err)
		}
		t.Cleanup(func() { _ = crds.Delete(context.Background(), name, metav1.DeleteOptions{}) })
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get CRD %s: %v", name, err)
			}
			if crdConditionTrue(got.Object, "Established") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not Established after 30s: %v", name, got.Object["status"])
			}
			time.Sleep(time.Millisecond)
		}
		// A fresh client, as Helm and kubectl have after invalidating their
		// caches; client-go asks for the aggregated (v2) document.
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		groups, err := dc.ServerGroups()
		if err != nil {
			t.Fatalf("discovery: %v", err)
		}
		if !slices.ContainsFunc(groups.Groups, func(g metav1.APIGroup) bool { return g.Name == group }) {
			t.Fatalf("round %d: CRD %s is Established but discovery does not list group %s", i, name, group)
		}
	}
}

// crdConditionTrue reports whether an unstructured CRD has condition typ True.
func crdConditionTrue(obj map[string]any, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}
