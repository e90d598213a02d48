package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: skiff/demo:1
        ports: [{containerPort: 8080}]
`

func TestKubectlSystemNamespaces(t *testing.T) {
	out := kubectl(t, "get", "ns")
	mustContain(t, out, "default", "kube-system", "kube-public", "kube-node-lease", "Active")
}

func TestKubectlApplyGetOutputs(t *testing.T) {
	ns := namespace(t)
	out := kubectlIn(t, deploymentYAML, "apply", "-n", ns, "-f", "-")
	mustContain(t, out, "deployment.apps/web created")
	// Re-apply is a no-op.
	mustContain(t, kubectlIn(t, deploymentYAML, "apply", "-n", ns, "-f", "-"), "deployment.apps/web unchanged")

	out = kubectl(t, "get", "deploy", "-n", ns, "-o", "wide")
	mustContain(t, out, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "CONTAINERS", "IMAGES", "SELECTOR", "web", "skiff/demo:1", "app=web")

	var obj map[string]any
	if err := json.Unmarshal([]byte(kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "json")), &obj); err != nil {
		t.Fatal(err)
	}
	meta := obj["metadata"].(map[string]any)
	if meta["uid"] == "" || meta["resourceVersion"] == "" || meta["generation"].(float64) != 1 {
		t.Fatalf("unexpected metadata: %v", meta)
	}
	spec := obj["spec"].(map[string]any)
	// Upstream defaulting ran: strategy and revisionHistoryLimit are set.
	if spec["revisionHistoryLimit"].(float64) != 10 || spec["strategy"].(map[string]any)["type"] != "RollingUpdate" {
		t.Fatalf("defaults not applied: %v", spec)
	}
	mustContain(t, kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "yaml", "--show-managed-fields"), "apiVersion: apps/v1", "kind: Deployment", "managedFields:", "manager: kubectl-client-side-apply")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"); got != "skiff/demo:1" {
		t.Fatalf("jsonpath: %q", got)
	}
	// Labels and field selectors, all namespaces.
	kubectl(t, "create", "configmap", "a", "-n", ns, "--from-literal=k=v")
	kubectl(t, "create", "configmap", "b", "-n", ns, "--from-literal=k=v")
	kubectl(t, "label", "configmap", "a", "-n", ns, "pick=yes")
	out = kubectl(t, "get", "cm", "-n", ns, "-l", "pick=yes", "-o", "name")
	if strings.TrimSpace(out) != "configmap/a" {
		t.Fatalf("label selector: %q", out)
	}
	out = kubectl(t, "get", "cm", "-A", "--field-selector", "metadata.name=b,metadata.namespace="+ns, "-o", "name")
	if strings.TrimSpace(out) != "configmap/b" {
		t.Fatalf("field selector: %q", out)
	}
	out = kubectl(t, "get", "cm", "-A")
	mustContain(t, out, "NAMESPACE", ns)
	// A bad field selector is refused with the upstream message.
	mustContain(t, kubectlFail(t, "", "get", "cm", "-n", ns, "--field-selector", "data.k=v"), `"data.k" is not a known field selector: only "metadata.name", "metadata.namespace"`)
	// Describe shows upstream's describer output.
	mustContain(t, kubectl(t, "describe", "deploy", "web", "-n", ns), "Name:", "web", "Replicas:", "2 desired", "StrategyType:", "RollingUpdate")
}

func TestKubectlWatch(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skiffBin, "kubectl", "get", "cm", "-n", ns, "-w", "--output-watch-events")
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(500 * time.Millisecond)
	kubectl(t, "create", "configmap", "w1", "-n", ns)
	kubectl(t, "label", "configmap", "w1", "-n", ns, "x=y")
	kubectl(t, "delete", "configmap", "w1", "-n", ns)
	var seen []string
	want := []*regexp.Regexp{regexp.MustCompile(`ADDED\s+w1`), regexp.MustCompile(`MODIFIED\s+w1`), regexp.MustCompile(`DELETED\s+w1`)}
	for len(want) > 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended early; saw %q", seen)
			}
			seen = append(seen, l)
			if want[0].MatchString(l) {
				want = want[1:]
			}
		case <-ctx.Done():
			t.Fatalf("timed out; saw %q", seen)
		}
	}
}

func TestKubectlPatchLabelScaleImage(t *testing.T) {
	ns := namespace(t)
	kubectlIn(t, deploymentYAML, "apply", "-n", ns, "-f", "-")
	kubectl(t, "annotate", "deploy", "web", "-n", ns, "note=hello")
	kubectl(t, "label", "deploy", "web", "-n", ns, "env=test")
	kubectl(t, "patch", "deploy", "web", "-n", ns, "--type=merge", "-p", `{"metadata":{"labels":{"merge":"yes"}}}`)
	kubectl(t, "patch", "deploy", "web", "-n", ns, "--type=json", "-p", `[{"op":"add","path":"/metadata/labels/json","value":"yes"}]`)
	// Strategic merge patch merges the container list by name.
	kubectl(t, "patch", "deploy", "web", "-n", ns, "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"A","value":"1"}]}]}}}}`)
	out := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "json")
	mustContain(t, out, `"note": "hello"`, `"env": "test"`, `"merge": "yes"`, `"json": "yes"`, `"name": "A"`, `"image": "skiff/demo:1"`)
	mustContain(t, kubectl(t, "scale", "deploy", "web", "-n", ns, "--replicas=5"), "scaled")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"); got != "5" {
		t.Fatalf("replicas after scale: %q", got)
	}
	kubectl(t, "set", "image", "deploy/web", "-n", ns, "web=skiff/demo:2")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}"); !strings.HasPrefix(got, "skiff/demo:2 ") {
		t.Fatalf("set image: %q", got)
	}
	kubectl(t, "rollout", "restart", "deploy/web", "-n", ns)
	mustContain(t, kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "yaml"), "kubectl.kubernetes.io/restartedAt")
	// A JSON patch that tests a wrong value fails cleanly and changes nothing.
	errOut := kubectlFail(t, "", "patch", "deploy", "web", "-n", ns, "--type=json", "-p", `[{"op":"test","path":"/spec/replicas","value":9}]`)
	mustContain(t, errOut, "the server rejected our request")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"); got != "5" {
		t.Fatalf("failed patch changed replicas: %q", got)
	}
	// Scale subresource read.
	out, _, err := shared.Kubectl(t, "", "get", "--raw", "/apis/apps/v1/namespaces/"+ns+"/deployments/web/scale")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, `"kind":"Scale"`, `"apiVersion":"autoscaling/v1"`, `"replicas":5`)
}

func TestKubectlValidation(t *testing.T) {
	ns := namespace(t)
	// Unknown field: strict field validation from the published OpenAPI.
	bad := strings.Replace(deploymentYAML, "replicas: 2", "replicas: 2\n  bogus: 1", 1)
	mustContain(t, kubectlFail(t, bad, "apply", "-n", ns, "-f", "-"), `unknown field "spec.bogus"`)
	// Invalid object: upstream validation message, nothing stored.
	invalid := strings.Replace(deploymentYAML, "matchLabels: {app: web}", "matchLabels: {app: other}", 1)
	errOut := kubectlFail(t, invalid, "apply", "-n", ns, "-f", "-")
	mustContain(t, errOut, `is invalid`, "spec.template.metadata.labels", "`selector` does not match template `labels`")
	if out := kubectl(t, "get", "deploy", "-n", ns, "-o", "name"); strings.TrimSpace(out) != "" {
		t.Fatalf("invalid object was stored: %q", out)
	}
	mustContain(t, kubectlFail(t, "", "create", "configmap", "Bad_Name", "-n", ns), "Invalid value", "RFC 1123")
	mustContain(t, kubectlFail(t, "", "create", "configmap", "x", "-n", "does-not-exist"), `namespaces "does-not-exist" not found`)
	// Immutable selector.
	kubectlIn(t, deploymentYAML, "apply", "-n", ns, "-f", "-")
	errOut = kubectlFail(t, "", "patch", "deploy", "web", "-n", ns, "--type=merge", "-p", `{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}`)
	mustContain(t, errOut, "field is immutable")
	mustContain(t, kubectlFail(t, "kind: Nope\napiVersion: v9\nmetadata: {name: x}\n", "apply", "-n", ns, "-f", "-"), `no matches for kind "Nope" in version "v9"`)
}

func TestKubectlCreateVarious(t *testing.T) {
	ns := namespace(t)
	mustContain(t, kubectl(t, "create", "secret", "generic", "s1", "-n", ns, "--from-literal=pw=hunter2"), "secret/s1 created")
	if got := kubectl(t, "get", "secret", "s1", "-n", ns, "-o", "jsonpath={.data.pw}"); got != "aHVudGVyMg==" {
		t.Fatalf("secret data: %q", got)
	}
	mustContain(t, kubectl(t, "create", "configmap", "c1", "-n", ns, "--from-literal=a=1"), "configmap/c1 created")
	mustContain(t, kubectl(t, "create", "serviceaccount", "sa1", "-n", ns), "serviceaccount/sa1 created")
	mustContain(t, kubectl(t, "get", "sa", "-n", ns), "sa1")
	mustContain(t, kubectl(t, "get", "secret", "-n", ns, "--field-selector", "type=Opaque"), "s1")
	out := kubectl(t, "create", "configmap", "dry", "-n", ns, "--dry-run=server", "-o", "name")
	mustContain(t, out, "configmap/dry")
	if _, errOut, err := shared.Kubectl(t, "", "get", "cm", "dry", "-n", ns); err == nil || !strings.Contains(errOut, "NotFound") {
		t.Fatalf("server dry-run stored the object: %v %s", err, errOut)
	}
}

func TestKubectlDiffRollout(t *testing.T) {
	ns := namespace(t)
	kubectlIn(t, deploymentYAML, "apply", "-n", ns, "-f", "-")
	changed := strings.Replace(deploymentYAML, "skiff/demo:1", "skiff/demo:3", 1)
	out, _, err := shared.Kubectl(t, changed, "diff", "-n", ns, "-f", "-")
	// kubectl diff exits 1 when there are differences.
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("diff: want exit 1, got %v\n%s", err, out)
	}
	mustContain(t, out, "-      - image: skiff/demo:1", "+      - image: skiff/demo:3", "-  generation: 1", "+  generation: 2")
	// Revisions come from ReplicaSets, which the deployment controller creates.
	mustContain(t, kubectl(t, "rollout", "history", "deploy/web", "-n", ns), "deployment.apps/web")
}

func TestKubectlDelete(t *testing.T) {
	ns := namespace(t)
	for _, policy := range []string{"background", "foreground", "orphan"} {
		t.Run(policy, func(t *testing.T) {
			owner := "owner-" + policy
			kubectl(t, "create", "configmap", owner, "-n", ns)
			uid := kubectl(t, "get", "cm", owner, "-n", ns, "-o", "jsonpath={.metadata.uid}")
			child := `apiVersion: v1
kind: ConfigMap
metadata:
  name: child-` + policy + `
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: ` + owner + `, uid: "` + uid + `", blockOwnerDeletion: true}]
`
			kubectlIn(t, child, "apply", "-n", ns, "-f", "-")
			mustContain(t, kubectl(t, "delete", "cm", owner, "-n", ns, "--cascade="+policy, "--wait"), "deleted")
			_, errOut, err := shared.Kubectl(t, "", "wait", "--for=delete", "cm/"+owner, "-n", ns, "--timeout=30s")
			if err != nil && !strings.Contains(errOut, "not found") {
				t.Fatalf("wait --for=delete: %v %s", err, errOut)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, _, err := shared.Kubectl(t, "", "get", "cm", "child-"+policy, "-n", ns)
				gone := err != nil
				if policy == "orphan" {
					if gone {
						t.Fatal("orphaned child was deleted")
					}
					refs := kubectl(t, "get", "cm", "child-"+policy, "-n", ns, "-o", "jsonpath={.metadata.ownerReferences}")
					if refs == "" {
						break
					}
				} else if gone {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("child not handled for %s deletion", policy)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	// Finalizers hold an object with deletionTimestamp set until removed.
	kubectlIn(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/hold]}\n", "apply", "-n", ns, "-f", "-")
	kubectl(t, "delete", "cm", "held", "-n", ns, "--wait=false")
	if ts := kubectl(t, "get", "cm", "held", "-n", ns, "-o", "jsonpath={.metadata.deletionTimestamp}"); ts == "" {
		t.Fatal("deletionTimestamp not set on finalized object")
	}
	kubectl(t, "patch", "cm", "held", "-n", ns, "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`)
	kubectl(t, "wait", "--for=delete", "cm/held", "-n", ns, "--timeout=30s")
	// Namespace deletion ends with the namespace gone.
	kubectl(t, "create", "namespace", ns+"-gone")
	kubectl(t, "create", "configmap", "x", "-n", ns+"-gone")
	kubectl(t, "delete", "namespace", ns+"-gone", "--wait", "--timeout=60s")
	if _, _, err := shared.Kubectl(t, "", "get", "namespace", ns+"-gone"); err == nil {
		t.Fatal("namespace still exists after delete --wait")
	}
	// deletecollection
	kubectl(t, "create", "configmap", "dc1", "-n", ns)
	kubectl(t, "create", "configmap", "dc2", "-n", ns)
	kubectl(t, "delete", "configmaps", "--all", "-n", ns)
}

func TestKubectlDiscoveryAndAuth(t *testing.T) {
	out := kubectl(t, "api-resources")
	for _, r := range []string{"pods", "deployments", "customresourcedefinitions", "leases", "poddisruptionbudgets", "clusterroles", "storageclasses",
		"priorityclasses", "endpointslices", "horizontalpodautoscalers", "cronjobs", "ingresses", "selfsubjectaccessreviews", "tokenreviews"} {
		if !regexp.MustCompile(`(?m)^` + r + `\s`).MatchString(out) {
			t.Errorf("api-resources lacks %s", r)
		}
	}
	mustContain(t, kubectl(t, "api-versions"), "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1", "coordination.k8s.io/v1")
	mustContain(t, kubectl(t, "explain", "deployment.spec.replicas"), "FIELD: replicas <integer>")
	// The aggregator's own types, whose OpenAPI it serves itself.
	mustContain(t, kubectl(t, "explain", "apiservice.spec.caBundle"), "FIELD: caBundle <string>")
	mustContain(t, kubectl(t, "auth", "whoami"), "system:admin", "system:masters")
	if got := strings.TrimSpace(kubectl(t, "auth", "can-i", "create", "pods")); got != "yes" {
		t.Fatalf("can-i: %q", got)
	}
	out, _, _ = shared.Kubectl(t, "", "auth", "can-i", "create", "pods", "--as", "nobody")
	if strings.TrimSpace(out) != "no" {
		t.Fatalf("can-i as nobody: %q", out)
	}
}

func TestPodsAndServiceAccounts(t *testing.T) {
	ns := namespace(t)
	// The ServiceAccount controller creates "default"; admission needs it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := shared.Kubectl(t, "", "get", "sa", "default", "-n", ns); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("default ServiceAccount never created")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustContain(t, kubectl(t, "get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "jsonpath={.data.ca\\.crt}"), "BEGIN CERTIFICATE")
	kubectl(t, "run", "p1", "-n", ns, "--image=skiff/demo:1")
	// Admission mounted the projected token volume.
	mustContain(t, kubectl(t, "get", "pod", "p1", "-n", ns, "-o", "jsonpath={.spec.volumes[0].projected.sources[0].serviceAccountToken.path} {.spec.containers[0].volumeMounts[0].mountPath}"),
		"token /var/run/secrets/kubernetes.io/serviceaccount")
	mustContain(t, kubectl(t, "get", "pods", "-n", ns, "-o", "wide"), "p1", "Pending", "NOMINATED NODE")
	mustContain(t, kubectl(t, "get", "pods", "-n", ns, "--field-selector", "status.phase=Pending,spec.nodeName="), "p1")
	// Tokens from TokenRequest authenticate.
	token := strings.TrimSpace(kubectl(t, "create", "token", "default", "-n", ns))
	cfg := shared.RESTConfig(t)
	kc := filepath.Join(t.TempDir(), "sa.kubeconfig")
	saConfig := clientcmdapi.NewConfig()
	saConfig.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	saConfig.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	saConfig.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "sa"}
	saConfig.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*saConfig, kc); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := shared.Kubectl(t, "", "--kubeconfig", kc, "auth", "whoami")
	if err != nil {
		t.Fatalf("whoami with a ServiceAccount token: %v %s", err, errOut)
	}
	mustContain(t, out, "system:serviceaccount:"+ns+":default")
	// Exec needs a node, which does not exist yet: a clear error, as upstream.
	_, errOut, err = shared.Kubectl(t, "", "exec", "p1", "-n", ns, "--", "true")
	if err == nil || !strings.Contains(errOut, "pod p1 does not have a host assigned") {
		t.Fatalf("exec into an unscheduled pod: %v %s", err, errOut)
	}
	// An unscheduled pod is deleted at once.
	kubectl(t, "delete", "pod", "p1", "-n", ns, "--wait", "--timeout=20s")
}
