package e2e

import (
	"strings"
	"testing"
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
