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
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
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
	// Built, if set, is called once every controller has been constructed
	// (their volume plugins initialised) and the controllers start: see
	// builtSignal.
	Built func()
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
	// The VAP status controller's informers start at once: they must not
	// pass builtSignal, so its client configuration is copied without it.
	vapKubeconfig := rest.CopyConfig(cfg.Kubeconfig)
	if c.Built != nil {
		var once sync.Once
		cfg.Kubeconfig.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return builtSignal{next: rt, fire: func() { once.Do(c.Built) }}
		})
	}
	// The controller manager and the VAP status controller run together:
	// either ending ends both, and the first to end gives the error.
	cc := cfg.Complete()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- runVAPStatus(runCtx, cc, vapKubeconfig) }()
	go func() { done <- app.Run(runCtx, cc) }()
	err = <-done
	cancel()
	<-done
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("controllers: %w", err)
	}
	return nil
}

// builtSignal watches the controller manager's requests for the moment its
// controllers are all constructed. Upstream's Run builds every controller
// (BuildControllers), then starts the shared informers (clients with the
// user agent suffixes below), then runs the controllers; before that the
// informers' client only asks /healthz. So the informers' first other
// request means construction is over, whatever the order of the
// controllers and however long a restart takes. The server's kubelet
// waits for it: its CSI volume plugin must initialise after the
// controllers' (see server.Config.VolumeControllersStarted).
type builtSignal struct {
	next http.RoundTripper
	fire func()
}

// informerAgents end the user agents of the controller manager's informer
// clients (rest.AddUserAgent(cfg, "shared-informers") upstream).
var informerAgents = []string{"/shared-informers", "/metadata-informers"}

func (b builtSignal) RoundTrip(r *http.Request) (*http.Response, error) {
	if informerRequest(r) {
		b.fire()
	}
	return b.next.RoundTrip(r)
}

func informerRequest(r *http.Request) bool {
	if r.URL.Path == "/healthz" {
		return false
	}
	ua := r.Header.Get("User-Agent")
	for _, s := range informerAgents {
		if strings.HasSuffix(ua, s) {
			return true
		}
	}
	return false
}
