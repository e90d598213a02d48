package agent

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRestartKeepsPods restarts the server (and so its agent, containerd
// and kubelet): running containers must be adopted, not restarted.
func TestRestartKeepsPods(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "survivor", nil)
	before := waitPod(t, ns, "survivor", 60*time.Second, "running", running)
	id := before.Status.ContainerStatuses[0].ContainerID

	pid := taskPID(t, id)
	shared.Stop()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("container process %d is gone while skiff is stopped, want it running under its shim", pid)
	}
	if err := shared.Start(); err != nil {
		t.Fatal(err)
	}
	// Give the new kubelet time to sync the pod and (wrongly) restart it.
	time.Sleep(15 * time.Second)
	after := waitPod(t, ns, "survivor", 60*time.Second, "running after restart", running)
	cs := after.Status.ContainerStatuses[0]
	if cs.ContainerID != id || cs.RestartCount != 0 {
		t.Fatalf("after restart: container %s restarts %d, want %s with 0", cs.ContainerID, cs.RestartCount, id)
	}
	if st := taskStatus(t, id); st != "running" {
		t.Fatalf("container %s is %q after restart", id, st)
	}
	n, err := admin(t).CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady && c.Status != v1.ConditionTrue {
			t.Fatalf("node not Ready after restart: %+v", c)
		}
	}
}
