// Package controllers runs the Kubernetes control loops of the Skiff
// server: upstream's kube-controller-manager (k8s.io/kubernetes/cmd/
// kube-controller-manager/app), in-process, as an API client with its own
// identity (system:kube-controller-manager) and per-controller
// ServiceAccount credentials, exactly as a separate kube-controller-manager
// would run. Controllers never touch storage.
//
// Upstream behaviour is the specification for workloads (Deployment,
// ReplicaSet, DaemonSet, StatefulSet, Job, CronJob), garbage collection,
// namespaces, Services' endpoints, node lifecycle, pod GC, disruption
// budgets and the rest, so Skiff reuses upstream's loops rather than
// re-implementing them. What Skiff changes is configuration: node-loss
// timings suited to small clusters, higher client rate limits (the client
// is on loopback), and node IPAM for the pod network.
package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/informers"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

// Config configures the controller manager. cmd/ and server/ fill it.
type Config struct {
	// Kubeconfig is the controller manager's own client identity.
	Kubeconfig string
	// CACert and CAKey sign certificates (CSR signing controllers); CACert
	// is also published as kube-root-ca.crt in every namespace.
	CACert, CAKey string
	// SAKey signs legacy ServiceAccount token Secrets.
	SAKey string
	// ClusterCIDR is the pod network; each node gets a /NodeCIDRMaskSize.
	ClusterCIDR      string
	NodeCIDRMaskSize int
	ServiceCIDR      string
	// NodeMonitorGracePeriod is how long a node may go without a heartbeat
	// before it is marked NotReady/Unknown (upstream: 50 s).
	NodeMonitorGracePeriod time.Duration
	// NodeMonitorPeriod is how often node health is checked (upstream: 5 s).
	NodeMonitorPeriod time.Duration
	// QPS and Burst of the controllers' API clients.
	QPS   float32
	Burst int
	// ExtraArgs are appended kube-controller-manager flags (--name=value).
	ExtraArgs []string
	// Informers, if set, is the controllers' shared informer factory
	// (server/informerpool's, shared with the scheduler); unset, the
	// controller manager makes its own.
	Informers informers.SharedInformerFactory
}

func (c Config) args() []string {
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-skip-lookup=true",
		"--secure-port=0",
		// Leader election is server/leader's (upstream's exits the process).
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.SAKey,
		"--root-ca-file=" + c.CACert,
		"--cluster-signing-cert-file=" + c.CACert,
		"--cluster-signing-key-file=" + c.CAKey,
		"--cluster-name=skiff",
		// The VAP status controller runs beside, see runVAPStatus.
		"--controllers=*,tokencleaner,-" + vapStatusController,
		"--configure-cloud-routes=false",
		"--profiling=false",
	}
	if c.ClusterCIDR != "" {
		args = append(args, "--allocate-node-cidrs=true", "--cluster-cidr="+c.ClusterCIDR)
		if c.NodeCIDRMaskSize != 0 {
			args = append(args, "--node-cidr-mask-size="+strconv.Itoa(c.NodeCIDRMaskSize))
		}
	}
	if c.ServiceCIDR != "" {
		args = append(args, "--service-cluster-ip-range="+c.ServiceCIDR)
	}
	if c.NodeMonitorGracePeriod != 0 {
		args = append(args, "--node-monitor-grace-period="+c.NodeMonitorGracePeriod.String())
	}
	if c.NodeMonitorPeriod != 0 {
		args = append(args, "--node-monitor-period="+c.NodeMonitorPeriod.String())
	}
	if c.QPS != 0 {
		args = append(args, "--kube-api-qps="+strconv.FormatFloat(float64(c.QPS), 'f', -1, 32))
	}
	if c.Burst != 0 {
		args = append(args, "--kube-api-burst="+strconv.Itoa(c.Burst))
	}
	return append(args, c.ExtraArgs...)
}

// Run starts the controller manager and blocks until ctx ends. Logging
// and feature gates are the process's (set up by the API server).
func Run(ctx context.Context, c Config) error {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return fmt.Errorf("controllers: %w", err)
	}
	all, disabled, aliases := app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases()
	named := s.Flags(all, disabled, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(c.args()); err != nil {
		return fmt.Errorf("controllers: %w", err)
	}
	cfg, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		return fmt.Errorf("controllers: config: %w", err)
	}
	cfg.SharedInformers = c.Informers
	// The controller manager and the VAP status controller run together:
	// either ending ends both, and the first to end gives the error.
	cc := cfg.Complete()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- runVAPStatus(runCtx, cc) }()
	go func() { done <- app.Run(runCtx, cc) }()
	err = <-done
	cancel()
	<-done
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("controllers: %w", err)
	}
	return nil
}
