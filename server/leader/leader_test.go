package leader

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
)

func lease(name, holder string) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: name},
		Spec: coordinationv1.LeaseSpec{
			LeaseDurationSeconds: ptr.To[int32](60),
			AcquireTime:          &now,
			RenewTime:            &now,
			LeaseTransitions:     ptr.To[int32](3),
		},
	}
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	}
	return l
}

// TestReleaseAbandoned: a lease a crashed server still holds (renewed just
// now, 60 s to run) is released, and a new elector takes it at once
// instead of after the lease duration; missing and free leases are left
// as they are.
func TestReleaseAbandoned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake.NewClientset(lease("held", "host_dead-incarnation"), lease("free", ""))
	if err := ReleaseAbandoned(ctx, client, "held", "free", "missing"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		duration int32
	}{{"held", 1}, {"free", 60}} {
		l, err := client.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			t.Errorf("%s: still held by %s", tc.name, *l.Spec.HolderIdentity)
		}
		if got := *l.Spec.LeaseDurationSeconds; got != tc.duration {
			t.Errorf("%s: duration %d s, want %d", tc.name, got, tc.duration)
		}
	}
	if _, err := client.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, "missing", metav1.GetOptions{}); err == nil {
		t.Error("a missing lease was created")
	}

	// A new incarnation acquires the released lease on its first try.
	acquired := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "held"},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: "host_new-incarnation"},
		},
		LeaseDuration: Default.LeaseDuration, RenewDeadline: Default.RenewDeadline, RetryPeriod: Default.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(acquired) },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go le.Run(runCtx)
	select {
	case <-acquired:
	case <-time.After(Default.RetryPeriod):
		t.Fatalf("the released lease was not acquired on the first try (a held one waits %s)", Default.LeaseDuration)
	}
}
