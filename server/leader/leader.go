// Package leader runs a control-plane component only while this process
// holds its coordination.k8s.io Lease (kube-system/<name>), so several
// servers can run the same components later with one active at a time.
//
// Upstream's components have their own leader election, but on losing or
// releasing the lease they end the process (klog.FlushAndExit / os.Exit):
// harmless for a dedicated binary, fatal for Skiff, where the API server
// and storage share the process and must shut down in order. Here the
// component just gets its context cancelled.
package leader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
)

// Timings of the lease. Renewal has room to spare when the API server is
// saturated (upstream: 15 s / 10 s / 2 s).
type Timings struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Default timings for in-process components.
var Default = Timings{LeaseDuration: 60 * time.Second, RenewDeadline: 45 * time.Second, RetryPeriod: 5 * time.Second}

// Run runs f while holding the lease. It returns nil once ctx ends (the
// lease is released), or an error if the lease was lost or f returned.
func Run(ctx context.Context, kubeconfig, name string, t Timings, f func(context.Context) error) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	host, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: host + "_" + string(uuid.NewUUID())},
	}
	// f ending (it failed) ends the election too, so the caller hears of it
	// instead of holding a lease for a component that no longer runs.
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	ferr := make(chan error, 1)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   t.LeaseDuration,
		RenewDeadline:   t.RenewDeadline,
		RetryPeriod:     t.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				ferr <- f(ctx)
				stop()
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	elector.Run(ectx) // returns when ctx ends, f ends or the lease is lost
	if ctx.Err() != nil {
		return nil
	}
	select {
	case err := <-ferr:
		if err == nil {
			err = errors.New("stopped")
		}
		return fmt.Errorf("%s: %w", name, err)
	default:
		return fmt.Errorf("%s: lost its leader lease", name)
	}
}

// ReleaseAbandoned releases the leases of names whatever holds them, as a
// holder does on a clean shutdown (no holder, 1 s duration), so this
// process can take them at once. A server that crashed (power loss, OOM
// kill) cannot release its leases, and without this its restart would wait
// a whole LeaseDuration before its controllers and scheduler run again.
//
// Call it only where no other live process can hold the leases: Skiff's
// storage is one bbolt database that one server process opens exclusively,
// so any holder but this process is a dead earlier incarnation. A store
// shared by several servers (etcd) must not call it.
func ReleaseAbandoned(ctx context.Context, client kubernetes.Interface, names ...string) error {
	leases := client.CoordinationV1().Leases(metav1.NamespaceSystem)
	for _, name := range names {
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("leader: lease %s: %w", name, err)
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			continue
		}
		// The update is conditional on the resourceVersion read: it fails
		// rather than overwrite a lease that changed meanwhile.
		l.Spec.HolderIdentity = nil
		l.Spec.LeaseDurationSeconds = ptr.To[int32](1)
		now := metav1.NewMicroTime(time.Now())
		l.Spec.RenewTime = &now
		if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("leader: release lease %s: %w", name, err)
		}
	}
	return nil
}
