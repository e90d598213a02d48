// Command crdload installs N distinct CustomResourceDefinitions (different
// groups and kinds, each with a structural schema of a few nested fields,
// defaults, a status subresource, printer columns, short names and a
// category), waits until every one is Established and listed by discovery,
// then creates and lists one custom resource of each so the API server has
// built its serving state for all of them (upstream builds it lazily on the
// first request, as an operator's informer would make it). It prints one
// JSON line of timings. `make bench` measures the server's RSS before and
// after. It works against any Kubernetes API, so the same binary measures
// Skiff and the upstream baseline.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// 20 distinct kinds and group words; with -n above 20 they repeat with a
// numeric suffix.
var (
	kinds = []string{"Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Contraption", "Flange",
		"Bracket", "Manifold", "Turbine", "Valve", "Gasket", "Piston", "Rotor", "Spindle", "Ratchet",
		"Lever", "Pulley", "Axle", "Bearing"}
	groups = []string{"storage", "network", "compute", "billing", "identity", "monitoring", "backup",
		"cache", "queue", "search", "mail", "dns", "certs", "secrets", "policy", "mesh", "gateway",
		"pipeline", "registry", "batch"}
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

type def struct {
	group, kind, plural, short string
}

// defs names count CRDs in groups <word>.<run>.<domain>.
func defs(domain, run string, count int) []def {
	out := make([]def, count)
	for i := range out {
		kind, g := kinds[i%len(kinds)], groups[i%len(groups)]
		if i >= len(kinds) {
			kind = fmt.Sprintf("%s%d", kind, i/len(kinds))
			g = fmt.Sprintf("%s%d", g, i/len(groups))
		}
		out[i] = def{group: fmt.Sprintf("%s.%s.%s", g, run, domain), kind: kind, plural: strings.ToLower(kind) + "s",
			short: fmt.Sprintf("%s%d", strings.ToLower(kind[:3]), i)}
	}
	return out
}

type obj = map[string]any

func str(desc string) obj { return obj{"type": "string", "description": desc} }

// crd returns a CRD with a realistic structural schema.
func crd(d def) *unstructured.Unstructured {
	spec := obj{
		"type": "object", "required": []any{"image"},
		"properties": obj{
			"image":    str("Container image to run."),
			"replicas": obj{"type": "integer", "format": "int32", "minimum": 0, "maximum": 100, "default": 1},
			"size":     obj{"type": "string", "enum": []any{"small", "medium", "large"}, "default": "small"},
			"suspend":  obj{"type": "boolean"},
			"config": obj{
				"type": "object",
				"properties": obj{
					"timeout": obj{"type": "string", "pattern": "^[0-9]+(s|m|h)$", "default": "30s"},
					"retries": obj{"type": "integer", "minimum": 0, "default": 3},
					"labels":  obj{"type": "object", "additionalProperties": obj{"type": "string"}},
					"tls": obj{"type": "object", "properties": obj{
						"enabled":    obj{"type": "boolean"},
						"secretName": str("Secret holding the certificate."),
					}},
				},
			},
			"ports": obj{
				"type": "array", "maxItems": 16,
				"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"name"},
				"items": obj{
					"type": "object", "required": []any{"name", "port"},
					"properties": obj{
						"name":     str("Port name."),
						"port":     obj{"type": "integer", "minimum": 1, "maximum": 65535},
						"protocol": obj{"type": "string", "enum": []any{"TCP", "UDP"}, "default": "TCP"},
					},
				},
			},
			"env": obj{
				"type": "array",
				"items": obj{"type": "object", "properties": obj{
					"name": str("Variable name."), "value": str("Variable value."),
				}},
			},
		},
	}
	status := obj{
		"type": "object",
		"properties": obj{
			"phase":              obj{"type": "string", "enum": []any{"Pending", "Ready", "Failed"}},
			"observedGeneration": obj{"type": "integer", "format": "int64"},
			"readyReplicas":      obj{"type": "integer", "format": "int32"},
			"conditions": obj{
				"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"type"},
				"items": obj{
					"type": "object", "required": []any{"type", "status"},
					"properties": obj{
						"type": str("Condition type."), "status": str("True, False or Unknown."),
						"reason": str("Machine-readable reason."), "message": str("Human-readable message."),
						"lastTransitionTime": obj{"type": "string", "format": "date-time"},
					},
				},
			},
		},
	}
	return &unstructured.Unstructured{Object: obj{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   obj{"name": d.plural + "." + d.group},
		"spec": obj{
			"group": d.group,
			"scope": "Namespaced",
			"names": obj{
				"kind": d.kind, "listKind": d.kind + "List", "plural": d.plural, "singular": strings.ToLower(d.kind),
				"shortNames": []any{d.short}, "categories": []any{"bench"},
			},
			"versions": []any{obj{
				"name": "v1", "served": true, "storage": true,
				"subresources": obj{"status": obj{}},
				"additionalPrinterColumns": []any{
					obj{"name": "Image", "type": "string", "jsonPath": ".spec.image"},
					obj{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
					obj{"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
					obj{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
				},
				"schema": obj{"openAPIV3Schema": obj{
					"type":        "object",
					"description": d.kind + " is a benchmark resource.",
					"properties": obj{
						"apiVersion": obj{"type": "string"}, "kind": obj{"type": "string"}, "metadata": obj{"type": "object"},
						"spec": spec, "status": status,
					},
				}},
			}},
		},
	}}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API")
	n := flag.Int("n", 20, "CRDs to install")
	domain := flag.String("domain", "bench.example.com", "domain under which the CRD groups are made")
	label := flag.String("label", "", "label for the result line")
	flag.Parse()
	if err := run(*kubeconfig, *domain, *label, *n); err != nil {
		fmt.Fprintln(os.Stderr, "crdload:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, domain, label string, n int) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1e6, 1e6
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	ds := defs(domain, fmt.Sprintf("b%d", time.Now().Unix()%100000), n)

	start := time.Now()
	for _, d := range ds {
		if _, err := dyn.Resource(crdGVR).Create(ctx, crd(d), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD %s.%s: %w", d.plural, d.group, err)
		}
	}
	createdMs := ms(time.Since(start))

	// Established condition on every CRD.
	for _, d := range ds {
		for {
			u, err := dyn.Resource(crdGVR).Get(ctx, d.plural+"."+d.group, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if established(u) {
				break
			}
			if err := sleep(ctx, d, "Established"); err != nil {
				return err
			}
		}
	}
	establishedMs := ms(time.Since(start))

	// Discovery lists every resource.
	for _, d := range ds {
		for {
			rl, err := disc.ServerResourcesForGroupVersion(d.group + "/v1")
			if err == nil && hasResource(rl, d.plural) {
				break
			}
			if err := sleep(ctx, d, "in discovery"); err != nil {
				return err
			}
		}
	}
	discoveredMs := ms(time.Since(start))

	// One custom resource of each, created (defaults applied) and listed.
	ns := "default"
	for i, d := range ds {
		gvr := schema.GroupVersionResource{Group: d.group, Version: "v1", Resource: d.plural}
		cr := &unstructured.Unstructured{Object: obj{
			"apiVersion": d.group + "/v1", "kind": d.kind,
			"metadata": obj{"name": fmt.Sprintf("%s-%d", strings.ToLower(d.kind), i)},
			"spec": obj{
				"image": "registry.example/app:1", "replicas": 2,
				"config": obj{"labels": obj{"team": "bench"}},
				"ports":  []any{obj{"name": "http", "port": 8080}},
			},
		}}
		var got *unstructured.Unstructured
		for {
			// A CRD can be in discovery a moment before its storage takes
			// writes on some servers; retry briefly.
			got, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, cr, metav1.CreateOptions{})
			if err == nil {
				break
			}
			if e := sleep(ctx, d, "created ("+err.Error()+")"); e != nil {
				return e
			}
		}
		if v, _, _ := unstructured.NestedString(got.Object, "spec", "config", "timeout"); v != "30s" {
			return fmt.Errorf("%s: schema default spec.config.timeout not applied (got %q)", d.kind, v)
		}
		list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%s: listed %d objects, want 1", d.kind, len(list.Items))
		}
	}
	servedMs := ms(time.Since(start))

	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"label": label, "crds": n,
		"created_ms": createdMs, "established_ms": establishedMs,
		"discovered_ms": discoveredMs, "served_ms": servedMs,
	})
}

func hasResource(rl *metav1.APIResourceList, plural string) bool {
	for _, r := range rl.APIResources {
		if r.Name == plural {
			return true
		}
	}
	return false
}

func sleep(ctx context.Context, d def, what string) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s.%s not %s: %w", d.plural, d.group, what, ctx.Err())
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
