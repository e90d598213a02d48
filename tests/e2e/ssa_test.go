package e2e

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// managedFields returns the managedFields entries of an object, keyed by
// "manager/operation" (with "/subresource" when set), each as its fieldsV1
// tree.
func managedFields(t *testing.T, ns, kind, name string) map[string]map[string]any {
	t.Helper()
	var obj struct {
		Metadata struct {
			ManagedFields []struct {
				Manager, Operation, Subresource string
				FieldsV1                        map[string]any
			}
		}
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields")), &obj); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, e := range obj.Metadata.ManagedFields {
		key := e.Manager + "/" + e.Operation
		if e.Subresource != "" {
			key += "/" + e.Subresource
		}
		if _, dup := out[key]; dup {
			t.Fatalf("duplicate managedFields entry %s", key)
		}
		out[key] = e.FieldsV1
	}
	return out
}

// owns reports whether a fieldsV1 tree contains the path (e.g. "f:spec",
// "f:replicas").
func owns(fields map[string]any, path ...string) bool {
	var cur any = fields
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}

func managerKeys(mf map[string]map[string]any) []string {
	var keys []string
	for k := range mf {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var webImagePath = []string{"f:spec", "f:template", "f:spec", "f:containers", `k:{"name":"web"}`, "f:image"}

func TestKubectlServerSideApplyConflicts(t *testing.T) {
	ns := namespace(t)
	mustContain(t, kubectlIn(t, deploymentYAML, "apply", "--server-side", "-n", ns, "-f", "-"), "deployment.apps/web serverside-applied")
	mf := managedFields(t, ns, "deployment", "web")
	if !owns(mf["kubectl/Apply"], "f:spec", "f:replicas") || !owns(mf["kubectl/Apply"], webImagePath...) || !owns(mf["kubectl/Apply"], "f:metadata", "f:labels", "f:tier") {
		t.Fatalf("kubectl does not own the applied fields: %v", mf)
	}
	// Server-side apply does not write the client-side annotation.
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", `jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}`); got != "" {
		t.Fatalf("last-applied annotation after server-side apply: %q", got)
	}
	// Re-applying the same manifest changes nothing.
	rv := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.metadata.resourceVersion}")
	kubectlIn(t, deploymentYAML, "apply", "--server-side", "-n", ns, "-f", "-")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.metadata.resourceVersion}"); got != rv {
		t.Fatalf("no-op apply changed resourceVersion %s -> %s", rv, got)
	}

	// A second manager that wants other values for kubectl's fields conflicts.
	other := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 5\n  template:\n    spec:\n      containers:\n      - name: web\n        image: skiff/demo:2\n"
	errOut := kubectlFail(t, other, "apply", "--server-side", "--field-manager", "other", "-n", ns, "-f", "-")
	mustContain(t, errOut, "Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image",
		"Please review the fields above--they currently have other managers", "--force-conflicts")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"); got != "2 skiff/demo:1" {
		t.Fatalf("a conflicting apply changed the object: %s", got)
	}
	// The same values are no conflict: the managers then share the fields.
	same := strings.NewReplacer("replicas: 5", "replicas: 2", "skiff/demo:2", "skiff/demo:1").Replace(other)
	kubectlIn(t, same, "apply", "--server-side", "--field-manager", "other", "-n", ns, "-f", "-")
	mf = managedFields(t, ns, "deployment", "web")
	if !owns(mf["other/Apply"], "f:spec", "f:replicas") || !owns(mf["kubectl/Apply"], "f:spec", "f:replicas") {
		t.Fatalf("shared ownership of spec.replicas: %v", mf)
	}

	// --force-conflicts takes the fields over.
	mustContain(t, kubectlIn(t, other, "apply", "--server-side", "--force-conflicts", "--field-manager", "other", "-n", ns, "-f", "-"), "deployment.apps/web serverside-applied")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"); got != "5 skiff/demo:2" {
		t.Fatalf("after --force-conflicts: %s", got)
	}
	mf = managedFields(t, ns, "deployment", "web")
	if !owns(mf["other/Apply"], "f:spec", "f:replicas") || !owns(mf["other/Apply"], webImagePath...) {
		t.Fatalf("other does not own the forced fields: %v", mf)
	}
	if owns(mf["kubectl/Apply"], "f:spec", "f:replicas") || owns(mf["kubectl/Apply"], webImagePath...) {
		t.Fatalf("kubectl still owns the forced fields: %v", mf["kubectl/Apply"])
	}
	if !owns(mf["kubectl/Apply"], "f:spec", "f:selector") || !owns(mf["kubectl/Apply"], "f:metadata", "f:labels", "f:tier") {
		t.Fatalf("kubectl lost fields nobody took: %v", mf["kubectl/Apply"])
	}
	// kubectl's manifest now conflicts the other way round.
	errOut = kubectlFail(t, deploymentYAML, "apply", "--server-side", "-n", ns, "-f", "-")
	mustContain(t, errOut, "Apply failed with 2 conflicts: conflicts with \"other\":")

	// A conflict with an Update manager names its API version.
	kubectl(t, "patch", "deploy", "web", "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":7}}`)
	errOut = kubectlFail(t, other, "apply", "--server-side", "--field-manager", "other", "-n", ns, "-f", "-")
	mustContain(t, errOut, `Apply failed with 1 conflict: conflict with "kubectl-patch" using apps/v1: .spec.replicas`)
	// Dry run with force reports success and writes nothing.
	kubectlIn(t, other, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "--field-manager", "other", "-n", ns, "-f", "-")
	if got := kubectl(t, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}"); got != "7" {
		t.Fatalf("server dry run changed replicas to %s", got)
	}
}

func TestKubectlClientSideToServerSideApply(t *testing.T) {
	ns := namespace(t)
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: migrate\n  labels: {team: a}\ndata:\n  a: \"1\"\n  b: \"2\"\n"
	mustContain(t, kubectlIn(t, cm, "apply", "-n", ns, "-f", "-"), "configmap/migrate created")
	mf := managedFields(t, ns, "configmap", "migrate")
	if keys := managerKeys(mf); !slices.Equal(keys, []string{"kubectl-client-side-apply/Update"}) {
		t.Fatalf("after client-side apply: managers %v", keys)
	}
	if !owns(mf["kubectl-client-side-apply/Update"], "f:metadata", "f:annotations", "f:kubectl.kubernetes.io/last-applied-configuration") {
		t.Fatalf("client-side apply manager does not own the annotation: %v", mf)
	}

	// The first server-side apply migrates the client-side apply manager's
	// fields to the "kubectl" apply manager; kubectl keeps the last-applied
	// annotation under its own "kubectl-last-applied" apply manager.
	mustContain(t, kubectlIn(t, cm, "apply", "--server-side", "-n", ns, "-f", "-"), "configmap/migrate serverside-applied")
	mf = managedFields(t, ns, "configmap", "migrate")
	if keys := managerKeys(mf); !slices.Equal(keys, []string{"kubectl-last-applied/Apply", "kubectl/Apply"}) {
		t.Fatalf("after migration: managers %v, want kubectl-last-applied/Apply kubectl/Apply", keys)
	}
	for _, p := range [][]string{{"f:data", "f:a"}, {"f:data", "f:b"}, {"f:metadata", "f:labels", "f:team"}} {
		if !owns(mf["kubectl/Apply"], p...) {
			t.Fatalf("kubectl/Apply does not own %v after migration: %v", p, mf["kubectl/Apply"])
		}
	}
	if !owns(mf["kubectl-last-applied/Apply"], "f:metadata", "f:annotations", "f:kubectl.kubernetes.io/last-applied-configuration") {
		t.Fatalf("kubectl-last-applied does not own the annotation: %v", mf)
	}
	// Ownership really moved: dropping a field from the manifest removes it
	// (had the client-side manager kept it, it would stay).
	cm2 := strings.Replace(cm, "  b: \"2\"\n", "", 1)
	kubectlIn(t, cm2, "apply", "--server-side", "-n", ns, "-f", "-")
	if got := kubectl(t, "get", "configmap", "migrate", "-n", ns, "-o", "jsonpath={.data}"); got != `{"a":"1"}` {
		t.Fatalf("after applying without b: data %s", got)
	}
	// The server keeps the last-applied annotation in step with what
	// "kubectl" applied.
	var last struct{ Data map[string]string }
	lastJSON := kubectl(t, "get", "configmap", "migrate", "-n", ns, "-o", `jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}`)
	if err := json.Unmarshal([]byte(lastJSON), &last); err != nil || len(last.Data) != 1 || last.Data["a"] != "1" {
		t.Fatalf("last-applied annotation after server-side apply: %v %s", err, lastJSON)
	}
}

const databaseCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.ssa.e2e.skiff.dev
spec:
  group: ssa.e2e.skiff.dev
  names: {plural: databases, singular: database, kind: Database, shortNames: [sdb]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Engine, type: string, jsonPath: .spec.engine}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: boolean, jsonPath: .status.ready}
    - {name: Storage, type: string, jsonPath: .spec.storage.size, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A managed database instance.
        properties:
          spec:
            type: object
            description: Desired state of the database.
            required: [engine, replicas]
            properties:
              engine:
                type: string
                description: Database engine to run.
                enum: [postgres, mysql]
              replicas:
                type: integer
                description: Number of database replicas.
                minimum: 1
                maximum: 5
              storage:
                type: object
                description: Persistent storage settings.
                properties:
                  size: {type: string, description: Volume size., pattern: '^[0-9]+Gi$'}
                  class: {type: string, description: Storage class name.}
          status:
            type: object
            properties:
              ready: {type: boolean, description: Whether the database accepts connections.}
`

func applyDatabaseCRD(t *testing.T) {
	t.Helper()
	kubectlIn(t, databaseCRD, "apply", "--server-side", "-f", "-")
	// Wait for the deletion so the next test applying it starts afresh.
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "crd", "databases.ssa.e2e.skiff.dev", "--timeout=60s") })
	kubectl(t, "wait", "--for=condition=Established", "crd/databases.ssa.e2e.skiff.dev", "--timeout=30s")
}

func TestKubectlCustomResourceExplainAndColumns(t *testing.T) {
	ns := namespace(t)
	applyDatabaseCRD(t)
	// The CRD's schema reaches the OpenAPI v3 document shortly after it is
	// Established (asynchronously, as upstream).
	t0 := time.Now()
	var out string
	for {
		o, errOut, err := shared.Kubectl(t, "", "explain", "databases")
		if err == nil {
			out = o
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("explain databases still failing 10s after the CRD was Established: %v %s", err, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("explain works %s after Established", time.Since(t0).Round(time.Millisecond))
	mustContain(t, out, "GROUP:      ssa.e2e.skiff.dev", "KIND:       Database", "VERSION:    v1", "A managed database instance.")
	for _, re := range []string{`(?m)^  spec\s+<Object>$`, `(?m)^  status\s+<Object>$`, `(?m)^  metadata\s+<ObjectMeta>$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("explain databases lacks %s:\n%s", re, out)
		}
	}
	out = kubectl(t, "explain", "databases.spec")
	mustContain(t, out, "FIELD: spec <Object>", "Desired state of the database.", "Database engine to run.", "Number of database replicas.")
	for _, re := range []string{`(?m)^  engine\s+<string> -required-$`, `(?m)^  replicas\s+<integer> -required-$`, `(?m)^  storage\s+<Object>$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("explain databases.spec lacks %s:\n%s", re, out)
		}
	}
	mustContain(t, kubectl(t, "explain", "sdb.spec.engine"), "FIELD: engine <string>", "ENUM:", "postgres", "mysql", "Database engine to run.")
	out = kubectl(t, "explain", "databases.spec", "--recursive")
	if !regexp.MustCompile(`(?m)^  storage\s+<Object>\n    class\s+<string>\n    size\s+<string>$`).MatchString(out) {
		t.Fatalf("explain --recursive:\n%s", out)
	}

	for _, db := range []string{
		"apiVersion: ssa.e2e.skiff.dev/v1\nkind: Database\nmetadata: {name: orders}\nspec: {engine: postgres, replicas: 3, storage: {size: 10Gi}}\n",
		"apiVersion: ssa.e2e.skiff.dev/v1\nkind: Database\nmetadata: {name: users}\nspec: {engine: mysql, replicas: 1, storage: {size: 2Gi}}\n",
	} {
		kubectlIn(t, db, "apply", "--server-side", "-n", ns, "-f", "-")
	}
	kubectl(t, "patch", "database", "orders", "-n", ns, "--subresource=status", "--type=merge", "-p", `{"status":{"ready":true}}`)
	kubectl(t, "patch", "database", "users", "-n", ns, "--subresource=status", "--type=merge", "-p", `{"status":{"ready":false}}`)
	rows := table(t, kubectl(t, "get", "databases", "-n", ns))
	if want := []string{"NAME", "ENGINE", "REPLICAS", "READY", "AGE"}; !slices.Equal(rows[0], want) {
		t.Fatalf("columns %v, want %v", rows[0], want)
	}
	checkRows(t, rows[1:], [][]string{{"orders", "postgres", "3", "true"}, {"users", "mysql", "1", "false"}})
	rows = table(t, kubectl(t, "get", "sdb", "-n", ns, "-o", "wide"))
	if want := []string{"NAME", "ENGINE", "REPLICAS", "READY", "STORAGE", "AGE"}; !slices.Equal(rows[0], want) {
		t.Fatalf("wide columns %v, want %v", rows[0], want)
	}
	checkRows(t, rows[1:], [][]string{{"orders", "postgres", "3", "true", "10Gi"}, {"users", "mysql", "1", "false", "2Gi"}})
	// Sorting by a column's field and selecting by name still use the columns.
	rows = table(t, kubectl(t, "get", "databases", "-n", ns, "--sort-by=.spec.replicas"))
	if rows[1][0] != "users" || rows[2][0] != "orders" {
		t.Fatalf("sort by replicas: %v", rows)
	}
}

// table splits kubectl's table output into rows of columns.
func table(t *testing.T, out string) [][]string {
	t.Helper()
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	if len(rows) < 2 {
		t.Fatalf("table has no rows:\n%s", out)
	}
	return rows
}

// checkRows checks the leading cells of each row; the last cell is an age.
func checkRows(t *testing.T, rows, want [][]string) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("rows %v, want %v", rows, want)
	}
	for i, r := range rows {
		if len(r) != len(want[i])+1 || !slices.Equal(r[:len(want[i])], want[i]) || !regexp.MustCompile(`^\d+s$`).MatchString(r[len(r)-1]) {
			t.Fatalf("row %d: %v, want %v and an age", i, r, want[i])
		}
	}
}

func TestKubectlCreateTokenAndWhoami(t *testing.T) {
	ns := namespace(t)
	kubectl(t, "create", "serviceaccount", "robot", "-n", ns)
	kubectl(t, "create", "secret", "generic", "robot-binding", "-n", ns)
	uid := kubectl(t, "get", "secret", "robot-binding", "-n", ns, "-o", "jsonpath={.metadata.uid}")
	token := strings.TrimSpace(kubectl(t, "create", "token", "robot", "-n", ns, "--audience", "https://kubernetes.default.svc", "--audience", "example",
		"--duration", "15m", "--bound-object-kind", "Secret", "--bound-object-name", "robot-binding", "--bound-object-uid", uid))
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Sub  string   `json:"sub"`
		Aud  []string `json:"aud"`
		Exp  int64    `json:"exp"`
		Iat  int64    `json:"iat"`
		Nbf  int64    `json:"nbf"`
		Iss  string   `json:"iss"`
		Kube struct {
			Namespace      string
			ServiceAccount struct{ Name, UID string }
			Secret         struct{ Name, UID string }
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	saUID := kubectl(t, "get", "sa", "robot", "-n", ns, "-o", "jsonpath={.metadata.uid}")
	if claims.Sub != "system:serviceaccount:"+ns+":robot" || !slices.Equal(claims.Aud, []string{"https://kubernetes.default.svc", "example"}) ||
		claims.Exp-claims.Iat != 900 || time.Since(time.Unix(claims.Iat, 0)).Abs() > time.Minute || claims.Nbf != claims.Iat || claims.Iss == "" ||
		claims.Kube.Namespace != ns || claims.Kube.ServiceAccount.Name != "robot" || claims.Kube.ServiceAccount.UID != saUID ||
		claims.Kube.Secret.Name != "robot-binding" || claims.Kube.Secret.UID != uid {
		t.Fatalf("token claims: %s", payload)
	}
	// A token with the default audience authenticates kubectl.
	token = strings.TrimSpace(kubectl(t, "create", "token", "robot", "-n", ns))
	kc := saKubeconfig(t, token)
	out, errOut, err := shared.Kubectl(t, "", "--kubeconfig", kc, "auth", "whoami", "-o", "json")
	if err != nil {
		t.Fatalf("whoami with a ServiceAccount token: %v %s", err, errOut)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string
				UID      string
				Groups   []string
				Extra    map[string][]string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &review); err != nil {
		t.Fatal(err)
	}
	ui := review.Status.UserInfo
	if ui.Username != "system:serviceaccount:"+ns+":robot" || ui.UID != saUID ||
		!slices.Equal(ui.Groups, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}) ||
		len(ui.Extra["authentication.kubernetes.io/credential-id"]) != 1 {
		t.Fatalf("whoami: %s", out)
	}
	mustContain(t, kubectl(t, "--kubeconfig", kc, "auth", "whoami"), "ATTRIBUTE", "Username", "system:serviceaccount:"+ns+":robot", "system:serviceaccounts:"+ns)
	// The ServiceAccount has no RBAC grants.
	_, errOut, err = shared.Kubectl(t, "", "--kubeconfig", kc, "get", "pods", "-n", ns)
	if err == nil || !strings.Contains(errOut, `User "system:serviceaccount:`+ns+`:robot" cannot list resource "pods"`) {
		t.Fatalf("get pods without RBAC: %v %s", err, errOut)
	}
	// Bad requests for tokens.
	mustContain(t, kubectlFail(t, "", "create", "token", "nope", "-n", ns), `serviceaccounts "nope" not found`)
	mustContain(t, kubectlFail(t, "", "create", "token", "robot", "-n", ns, "--duration", "5m"), "may not specify a duration less than 10 minutes")
}

// saKubeconfig writes a kubeconfig that authenticates with token only.
func saKubeconfig(t *testing.T, token string) string {
	t.Helper()
	cfg := shared.RESTConfig(t)
	kc := filepath.Join(t.TempDir(), "sa.kubeconfig")
	c := clientcmdapi.NewConfig()
	c.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	c.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "sa"}
	c.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*c, kc); err != nil {
		t.Fatal(err)
	}
	return kc
}

func TestBadCRDAndCustomResource(t *testing.T) {
	ns := namespace(t)
	// Non-structural schemas are rejected with upstream's messages.
	nonStructural := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.bad.e2e.skiff.dev}
spec:
  group: bad.e2e.skiff.dev
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              size: {type: integer}
          extra:
            type: object
            properties:
              a: {type: string}
            additionalProperties: {type: string}
`
	errOut := kubectlFail(t, nonStructural, "apply", "-f", "-")
	mustContain(t, errOut, `The CustomResourceDefinition "gadgets.bad.e2e.skiff.dev" is invalid`,
		"spec.validation.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
		"spec.validation.openAPIV3Schema.properties[extra].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive")
	_, errOut, err := shared.Kubectl(t, "", "get", "crd", "gadgets.bad.e2e.skiff.dev")
	if err == nil || !strings.Contains(errOut, `customresourcedefinitions.apiextensions.k8s.io "gadgets.bad.e2e.skiff.dev" not found`) {
		t.Fatalf("rejected CRD was stored: %v %s", err, errOut)
	}

	// A custom resource violating its schema: 422 with every field path.
	applyDatabaseCRD(t)
	c, base := apiClient(t)
	url := base + "/apis/ssa.e2e.skiff.dev/v1/namespaces/" + ns + "/databases"
	bad := `{"apiVersion":"ssa.e2e.skiff.dev/v1","kind":"Database","metadata":{"name":"bad"},"spec":{"engine":"oracle","replicas":9,"storage":{"size":"ten"}}}`
	resp, body := do(t, c, "POST", url, "application/json", "application/json", []byte(bad))
	if resp.StatusCode != 422 {
		t.Fatalf("invalid custom resource: %d %s", resp.StatusCode, body)
	}
	var status struct {
		Kind, Reason, Message string
		Code                  int
		Details               struct {
			Name, Group, Kind string
			Causes            []struct{ Reason, Message, Field string }
		}
	}
	if err := json.Unmarshal(body, &status); err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, c := range status.Details.Causes {
		fields = append(fields, c.Reason+" "+c.Field)
	}
	slices.Sort(fields)
	want := []string{"FieldValueInvalid spec.replicas", "FieldValueInvalid spec.storage.size", "FieldValueNotSupported spec.engine"}
	if status.Kind != "Status" || status.Reason != "Invalid" || status.Code != 422 || status.Details.Kind != "Database" || status.Details.Group != "ssa.e2e.skiff.dev" ||
		!slices.Equal(fields, want) {
		t.Fatalf("status: %s\ncauses %v, want %v", body, fields, want)
	}
	mustContain(t, status.Message, `Database.ssa.e2e.skiff.dev "bad" is invalid`, `spec.engine: Unsupported value: "oracle": supported values: "postgres", "mysql"`,
		"spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5", `spec.storage.size in body should match '^[0-9]+Gi$'`)
	// A missing required field, through kubectl.
	errOut = kubectlFail(t, "apiVersion: ssa.e2e.skiff.dev/v1\nkind: Database\nmetadata: {name: bad2}\nspec: {engine: mysql}\n", "apply", "--server-side", "-n", ns, "-f", "-")
	mustContain(t, errOut, `The Database "bad2" is invalid`, "spec.replicas: Required value")
	// A wrong type is refused as well.
	errOut = kubectlFail(t, "apiVersion: ssa.e2e.skiff.dev/v1\nkind: Database\nmetadata: {name: bad3}\nspec: {engine: mysql, replicas: many}\n", "create", "-n", ns, "-f", "-")
	mustContain(t, errOut, `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`)
	// Nothing was stored.
	if out := kubectl(t, "get", "databases", "-n", ns, "-o", "name"); strings.TrimSpace(out) != "" {
		t.Fatalf("invalid custom resources stored: %s", out)
	}
	// An update to an invalid value is refused and leaves the stored object.
	kubectlIn(t, "apiVersion: ssa.e2e.skiff.dev/v1\nkind: Database\nmetadata: {name: good}\nspec: {engine: mysql, replicas: 2}\n", "apply", "--server-side", "-n", ns, "-f", "-")
	errOut = kubectlFail(t, "", "patch", "database", "good", "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":0}}`)
	mustContain(t, errOut, "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1")
	if got := kubectl(t, "get", "database", "good", "-n", ns, "-o", "jsonpath={.spec.replicas}"); got != "2" {
		t.Fatalf("after a refused patch: replicas %s", got)
	}
}
