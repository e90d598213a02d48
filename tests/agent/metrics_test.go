package agent

import (
	"strings"
	"testing"
	"time"
)

// TestKubectlTop: metrics.k8s.io is served by the server from the
// kubelets' summaries, no metrics-server pod.
func TestKubectlTop(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "measured", nil)
	waitPod(t, ns, "measured", 60*time.Second, "running", running)
	deadline := time.Now().Add(90 * time.Second)
	var nodes, pods string
	for {
		nodes, _, _ = shared.Kubectl(t, "", "top", "nodes")
		pods, _, _ = shared.Kubectl(t, "", "-n", ns, "top", "pods")
		if strings.Contains(nodes, nodeName) && strings.Contains(pods, "measured") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl top has no numbers:\nnodes:\n%s\npods:\n%s", nodes, pods)
		}
		time.Sleep(2 * time.Second)
	}
	for _, line := range strings.Split(nodes, "\n") {
		if strings.HasPrefix(line, nodeName+" ") {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasSuffix(f[1], "m") || !strings.HasSuffix(f[3], "Mi") || f[3] == "0Mi" {
				t.Fatalf("node line %q: want CPU in millicores and non-zero memory", line)
			}
		}
	}
	if out := kubectl(t, "get", "apiservice", "v1beta1.metrics.k8s.io"); !strings.Contains(out, "Local") || !strings.Contains(out, "True") {
		t.Fatalf("metrics APIService:\n%s", out)
	}
}
