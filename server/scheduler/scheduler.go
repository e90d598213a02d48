// Package scheduler runs upstream's kube-scheduler (k8s.io/kubernetes/cmd/
// kube-scheduler/app) in-process as an API client with its own identity
// (system:kube-scheduler). Filters, scores, preemption, the priority queue
// with backoff, and FailedScheduling messages are upstream's; Skiff sets
// the client rate limits for a loopback connection; leader election is the
// caller's (server/leader), since upstream's exits the process.
package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// Config configures the scheduler.
type Config struct {
	// StateDir holds the scheduler's configuration file.
	StateDir string
	// Kubeconfig is the scheduler's client identity.
	Kubeconfig string
	// QPS and Burst of the scheduler's API client (upstream: 50/100).
	QPS   float32
	Burst int
	// ExtraArgs are appended kube-scheduler flags (--name=value).
	ExtraArgs []string
	// Informers, if set, is the shared informer factory to use (one
	// shared with the controller manager: server/informerpool's scheduler
	// view, whose pod informer holds only pods that are not terminal);
	// unset, the scheduler makes its own.
	Informers informers.SharedInformerFactory
}

// config is a KubeSchedulerConfiguration: upstream defaults except the
// client's rate limits, which bound binding throughput.
func (c Config) config() string {
	qps, burst := c.QPS, c.Burst
	if qps == 0 {
		qps, burst = 50, 100
	}
	return fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: %s
  burst: %d
leaderElection:
  leaderElect: false
`, c.Kubeconfig, strconv.FormatFloat(float64(qps), 'f', -1, 32), burst)
}

// Run starts the scheduler and blocks until ctx ends.
func Run(ctx context.Context, c Config) error {
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	path := filepath.Join(c.StateDir, "config.yaml")
	if err := os.WriteFile(path, []byte(c.config()), 0o600); err != nil {
		return fmt.Errorf("scheduler: write config: %w", err)
	}
	opts := options.NewOptions()
	named := opts.Flags
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	args := append([]string{"--config=" + path, "--secure-port=0", "--authentication-skip-lookup=true"}, c.ExtraArgs...)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	opts.InformerFactory = c.Informers
	if opts.InformerName == nil {
		name, err := cache.NewInformerName("kube-scheduler")
		if err != nil {
			return fmt.Errorf("scheduler: %w", err)
		}
		opts.InformerName = name
	}
	cc, sched, err := app.Setup(ctx, opts)
	if err != nil {
		return fmt.Errorf("scheduler: setup: %w", err)
	}
	if err := app.Run(ctx, cc, sched); err != nil && ctx.Err() == nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	return nil
}
