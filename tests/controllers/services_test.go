package controllers

import (
	"context"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

func TestServicesAndEndpointSlices(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 2, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	ctx := context.Background()

	// The kubernetes Service takes the first address of the service CIDR.
	if ip := kubectl(t, "get", "svc", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}"); ip != "10.43.0.1" {
		t.Fatalf("kubernetes service clusterIP %q, want 10.43.0.1", ip)
	}

	dep := strings.Replace(deploymentYAML("api", poolName, "registry.local/api:1", 2),
		"        resources:", "        ports: [{name: http, containerPort: 8080}]\n        resources:", 1)
	kubectlIn(t, dep, "apply", "-n", ns, "-f", "-")
	kubectl(t, "rollout", "status", "-n", ns, "deploy/api", "--timeout=90s")
	kubectlIn(t, `apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: api-np}
spec:
  type: NodePort
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
`, "apply", "-n", ns, "-f", "-")

	svc, err := cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix("10.43.0.0/16").Contains(ip) {
		t.Fatalf("clusterIP %q not in the service CIDR 10.43.0.0/16", svc.Spec.ClusterIP)
	}
	np, err := cs.CoreV1().Services(ns).Get(ctx, "api-np", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := np.Spec.Ports[0].NodePort
	if port < 30000 || port > 32767 {
		t.Fatalf("nodePort %d outside 30000-32767", port)
	}
	// Conflicts are detected: the same nodePort or clusterIP is refused.
	clash := strings.NewReplacer("NAME", "clash", "PORT", itoa(int(port))).Replace(`apiVersion: v1
kind: Service
metadata: {name: NAME}
spec:
  type: NodePort
  selector: {app: api}
  ports: [{port: 80, nodePort: PORT}]
`)
	if _, errOut, err := shared.Kubectl(t, clash, "apply", "-n", ns, "-f", "-"); err == nil || !strings.Contains(errOut, "provided port is already allocated") {
		t.Fatalf("duplicate nodePort: err %v, stderr %s", err, errOut)
	}
	dupIP := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"dup"},"spec":{"clusterIP":"` + svc.Spec.ClusterIP + `","ports":[{"port":80}]}}`
	if _, errOut, err := shared.Kubectl(t, dupIP, "apply", "-n", ns, "-f", "-"); err == nil || !strings.Contains(errOut, "already allocated") {
		t.Fatalf("duplicate clusterIP: err %v, stderr %s", err, errOut)
	}

	// EndpointSlices list the ready pods with the resolved named port.
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range pods.Items {
		want = append(want, p.Status.PodIP)
	}
	sort.Strings(want)
	waitFor(t, 30*time.Second, "EndpointSlice with both pods ready", func() (bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=api"})
		if err != nil || len(slices.Items) != 1 {
			return false, err
		}
		s := slices.Items[0]
		var got []string
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || !*e.Conditions.Ready || e.NodeName == nil || e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
				return false, nil
			}
			got = append(got, e.Addresses...)
		}
		sort.Strings(got)
		return strings.Join(got, ",") == strings.Join(want, ",") && len(s.Ports) == 1 &&
			*s.Ports[0].Port == 8080 && *s.Ports[0].Name == "web", nil
	})
	// The legacy Endpoints object is maintained too.
	waitFor(t, 30*time.Second, "Endpoints with both pods", func() (bool, error) {
		ep, err := cs.CoreV1().Endpoints(ns).Get(ctx, "api", metav1.GetOptions{})
		if err != nil || len(ep.Subsets) != 1 {
			return false, err
		}
		return len(ep.Subsets[0].Addresses) == 2 && ep.Subsets[0].Ports[0].Port == 8080, nil
	})

	// Scaling down removes the endpoint.
	kubectl(t, "scale", "-n", ns, "deploy/api", "--replicas=1")
	waitFor(t, 30*time.Second, "EndpointSlice shrinks to one endpoint", func() (bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=api"})
		if err != nil || len(slices.Items) != 1 {
			return false, err
		}
		n := 0
		for _, e := range slices.Items[0].Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				n++
			}
		}
		return n == 1, nil
	})

	// Deleting a Service releases its nodePort and clusterIP for reuse.
	kubectl(t, "delete", "svc", "api-np", "-n", ns)
	waitFor(t, 30*time.Second, "released nodePort reusable", func() (bool, error) {
		_, _, err := shared.Kubectl(t, clash, "apply", "-n", ns, "-f", "-")
		return err == nil, nil
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
