package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestValidatingAdmissionPolicyTypeChecking: the controller manager's
// ValidatingAdmissionPolicy status controller type-checks a policy's
// expressions against the schema of what it matches (a built-in type
// here) and reports a mismatch in status.typeChecking; the policy itself
// is enforced by the API server.
func TestValidatingAdmissionPolicyTypeChecking(t *testing.T) {
	const policy = `apiVersion: admissionregistration.k8s.io/v1
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
	kubectlIn(t, policy, "apply", "-f", "-")
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "validatingadmissionpolicy", "e2e-typecheck") })
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := kubectl(t, "get", "validatingadmissionpolicy", "e2e-typecheck", "-o",
			`jsonpath={range .status.typeChecking.expressionWarnings[*]}{.fieldRef}={.warning}{"\n"}{end}`)
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
