package nodesim

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

func startSim(t *testing.T, nodes int) (*Sim, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset()
	sim := New(cs, Config{Name: "t", Nodes: nodes, RunDuration: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return sim, cs
}

func podOn(name, node string, policy v1.RestartPolicy, annotations map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: k8stypes.UID("uid-" + name), Annotations: annotations},
		Spec: v1.PodSpec{NodeName: node, RestartPolicy: policy,
			Containers: []v1.Container{{Name: "c", Image: "img"}}},
		Status: v1.PodStatus{Phase: v1.PodPending},
	}
}

func waitPhase(t *testing.T, cs *fake.Clientset, name string, want v1.PodPhase) *v1.Pod {
	t.Helper()
	var got *v1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = p
		return p.Status.Phase == want, nil
	})
	if err != nil {
		t.Fatalf("pod %s: phase %q, want %q", name, got.Status.Phase, want)
	}
	return got
}

func TestRegistersNodesAndLeases(t *testing.T) {
	sim, cs := startSim(t, 3)
	ctx := context.Background()
	for _, name := range sim.NodeNames() {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !nodeReady(n) || n.Labels[LabelManaged] != "t" || n.Status.Allocatable.Pods().Value() != 110 {
			t.Fatalf("node %s: ready %v labels %v allocatable %v", name, nodeReady(n), n.Labels, n.Status.Allocatable)
		}
		l, err := cs.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
		if err != nil || *l.Spec.HolderIdentity != name || l.OwnerReferences[0].Kind != "Node" {
			t.Fatalf("lease %s: %+v %v", name, l, err)
		}
	}
}

func TestPodLifecycle(t *testing.T) {
	tests := []struct {
		name        string
		policy      v1.RestartPolicy
		annotations map[string]string
		final       v1.PodPhase
	}{
		{"always-runs", v1.RestartPolicyAlways, nil, v1.PodRunning},
		{"never-succeeds", v1.RestartPolicyNever, nil, v1.PodSucceeded},
		{"never-fails", v1.RestartPolicyNever, map[string]string{AnnotationExitCode: "3"}, v1.PodFailed},
	}
	sim, cs := startSim(t, 1)
	node := sim.NodeNames()[0]
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cs.CoreV1().Pods("default").Create(context.Background(), podOn(tc.name, node, tc.policy, tc.annotations), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			running := waitPhase(t, cs, tc.name, v1.PodRunning)
			if running.Status.PodIP == "" || running.Status.HostIP != "10.250.0.1" || len(running.Status.ContainerStatuses) != 1 {
				t.Fatalf("running status: %+v", running.Status)
			}
			p := waitPhase(t, cs, tc.name, tc.final)
			if tc.final == v1.PodFailed && p.Status.ContainerStatuses[0].State.Terminated.ExitCode != 3 {
				t.Fatalf("exit code: %+v", p.Status.ContainerStatuses[0].State)
			}
		})
	}
}

func TestOnFailureRestartsInPlace(t *testing.T) {
	sim, cs := startSim(t, 1)
	pod := podOn("flaky", sim.NodeNames()[0], v1.RestartPolicyOnFailure, map[string]string{AnnotationExitCode: "1"})
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "flaky", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		return p.Status.Phase == v1.PodRunning && p.Status.ContainerStatuses[0].RestartCount >= 2, nil
	})
	if err != nil {
		t.Fatal("OnFailure pod was not restarted in place twice")
	}
}

func TestLostNodeStopsHandlingPods(t *testing.T) {
	sim, cs := startSim(t, 2)
	names := sim.NodeNames()
	if err := sim.Lose(names[1]); err != nil {
		t.Fatal(err)
	}
	if err := sim.Lose("nope"); err == nil {
		t.Fatal("losing an unknown node succeeded")
	}
	ctx := context.Background()
	lease, _ := cs.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, names[1], metav1.GetOptions{})
	for _, p := range []*v1.Pod{podOn("on-lost", names[1], v1.RestartPolicyAlways, nil), podOn("on-live", names[0], v1.RestartPolicyAlways, nil)} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPhase(t, cs, "on-live", v1.PodRunning)
	time.Sleep(300 * time.Millisecond) // several heartbeat intervals
	p, _ := cs.CoreV1().Pods("default").Get(ctx, "on-lost", metav1.GetOptions{})
	if p.Status.Phase != v1.PodPending {
		t.Fatalf("pod on lost node went %s", p.Status.Phase)
	}
	after, _ := cs.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, names[1], metav1.GetOptions{})
	if !after.Spec.RenewTime.Equal(lease.Spec.RenewTime) {
		t.Fatal("lost node's lease was renewed")
	}
	if err := sim.Restore(names[1]); err != nil {
		t.Fatal(err)
	}
	// A restored node resumes: its pending pod starts.
	waitPhase(t, cs, "on-lost", v1.PodRunning)
}
