package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/tests/testserver"
)

const typeErrorPolicy = `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: e2e-typecheck}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "object.spec.replicas > 'three'"
  - expression: "object.spec.replicas <= 5"
`

const typeCheckingWarnings = `jsonpath={range .status.typeChecking.expressionWarnings[*]}{.fieldRef}={.warning}{"\n"}{end}`

// TestValidatingAdmissionPolicyTypeChecking: the controller manager's
// ValidatingAdmissionPolicy status controller type-checks a policy's
// expressions against the schema of what it matches (a built-in type
// here) and reports a mismatch in status.typeChecking; the policy itself
// is enforced by the API server.
func TestValidatingAdmissionPolicyTypeChecking(t *testing.T) {
	kubectlIn(t, typeErrorPolicy, "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "validatingadmissionpolicy", "e2e-typecheck") })
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := kubectl(t, "get", "validatingadmissionpolicy", "e2e-typecheck", "-o", typeCheckingWarnings)
		if out != "" {
			if !strings.Contains(out, "spec.validations[0].expression=") || !strings.Contains(out, "no matching overload") ||
				strings.Contains(out, "spec.validations[1]") {
				t.Fatalf("typeChecking warnings: %q", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no status.typeChecking 30 s after the policy was created")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestValidatingAdmissionPolicyStatusControllerDisabled: the controller
// runs beside the controller manager, and the controller manager's
// --controllers list still turns it off.
func TestValidatingAdmissionPolicyStatusControllerDisabled(t *testing.T) {
	t.Parallel()
	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "novapstatus"),
		"--kube-controller-manager-arg=controllers=*,-validatingadmissionpolicy-status-controller")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	s.MustKubectl(t, typeErrorPolicy, "apply", "-f", "-")
	// Enabled, the status appears within about a second (the test above);
	// the ServiceAccount the controller would use is created when it starts.
	time.Sleep(8 * time.Second)
	if out := s.MustKubectl(t, "", "get", "validatingadmissionpolicy", "e2e-typecheck", "-o", typeCheckingWarnings); out != "" {
		t.Fatalf("disabled controller wrote typeChecking: %q", out)
	}
	if _, _, err := s.Kubectl(t, "", "get", "serviceaccount", "-n", "kube-system", "validatingadmissionpolicy-status-controller"); err == nil {
		t.Fatal("the disabled controller's ServiceAccount exists")
	}
}
