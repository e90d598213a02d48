package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent"
	"github.com/skiff-sh/skiff/internal/gctune"
	"github.com/skiff-sh/skiff/internal/heapprof"
	"github.com/skiff-sh/skiff/internal/textpages"
	"github.com/skiff-sh/skiff/server"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the control plane (API server, storage, controllers)",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: "/var/lib/skiff", Usage: "directory for state, certificates and the database", EnvVars: []string{"SKIFF_DATA_DIR"}},
			&cli.StringFlag{Name: "bind-address", Value: "0.0.0.0", Usage: "address the API server listens on"},
			&cli.StringFlag{Name: "advertise-address", Usage: "address the API server advertises to the cluster (default: detected)"},
			&cli.IntFlag{Name: "https-listen-port", Value: 6443, Usage: "API server port"},
			&cli.StringSliceFlag{Name: "tls-san", Usage: "additional hostname or IP for the serving certificate (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: defaultKubeconfig, Usage: "write the admin kubeconfig here", EnvVars: []string{"SKIFF_KUBECONFIG_OUTPUT"}},
			&cli.StringFlag{Name: "write-kubeconfig-mode", Value: "0600", Usage: "file mode of the written kubeconfig (octal)", EnvVars: []string{"SKIFF_KUBECONFIG_MODE"}},
			&cli.StringFlag{Name: "token", Aliases: []string{"t"}, Usage: "cluster join secret (generated and stored under the data dir when absent)", EnvVars: []string{"SKIFF_TOKEN"}},
			&cli.StringFlag{Name: "service-cidr", Value: "10.43.0.0/16", Usage: "ClusterIP range for Services"},
			&cli.StringFlag{Name: "service-node-port-range", Value: "30000-32767", Usage: "port range for NodePort Services"},
			&cli.BoolFlag{Name: "disable-agent", Usage: "do not run a node agent in the server process"},
			&cli.StringFlag{Name: "cluster-cidr", Value: "10.42.0.0/16", Usage: "pod network; each node gets a /24 from it"},
			&cli.DurationFlag{Name: "node-monitor-grace-period", Value: 30 * time.Second, Usage: "a node silent this long is marked unreachable (upstream default 50s; heartbeats come every 10s)"},
			&cli.IntFlag{Name: "default-toleration-seconds", Value: 15, Usage: "how long pods stay on a not-ready or unreachable node before eviction, unless they set tolerations (upstream default 300)"},
			&cli.BoolFlag{Name: "disable-scheduler", Usage: "do not run the scheduler"},
			&cli.BoolFlag{Name: "disable-controller-manager", Usage: "do not run the controllers"},
			&cli.StringSliceFlag{Name: "kube-apiserver-arg", Usage: "extra flag for the embedded kube-apiserver (name=value, repeatable; commas belong to the value)"},
			&cli.StringSliceFlag{Name: "kube-controller-manager-arg", Usage: "extra flag for the embedded kube-controller-manager (name=value, repeatable; commas belong to the value)"},
			&cli.StringSliceFlag{Name: "kube-scheduler-arg", Usage: "extra flag for the embedded kube-scheduler (name=value, repeatable; commas belong to the value)"},
		}, append(agentFlags(), logFlags()...)...),
		Action: runServer,
	}
}

func serverConfig(c *cli.Context, lc logConfig) (server.Config, error) {
	dataDir, err := absDir("data-dir", c.String("data-dir"))
	if err != nil {
		return server.Config{}, err
	}
	cfg := server.Config{
		DataDir:         dataDir,
		HTTPSPort:       c.Int("https-listen-port"),
		TLSSANs:         splitList(c.StringSlice("tls-san")),
		WriteKubeconfig: c.String("write-kubeconfig"),
		Token:           c.String("token"),
		ServiceCIDR:     c.String("service-cidr"),
		NodePortRange:   c.String("service-node-port-range"),
		ClusterCIDR:     c.String("cluster-cidr"),

		NodeMonitorGracePeriod:   c.Duration("node-monitor-grace-period"),
		DefaultTolerationSeconds: c.Int("default-toleration-seconds"),
		DisableScheduler:         c.Bool("disable-scheduler"),
		DisableControllerManager: c.Bool("disable-controller-manager"),
	}
	if cfg.BindAddress = net.ParseIP(c.String("bind-address")); cfg.BindAddress == nil {
		return cfg, fmt.Errorf("--bind-address %q is not an IP address", c.String("bind-address"))
	}
	if a := c.String("advertise-address"); a != "" {
		if cfg.AdvertiseAddress = net.ParseIP(a); cfg.AdvertiseAddress == nil {
			return cfg, fmt.Errorf("--advertise-address %q is not an IP address", a)
		}
	}
	if cfg.HTTPSPort <= 0 || cfg.HTTPSPort > 65535 {
		return cfg, fmt.Errorf("--https-listen-port %d is out of range", cfg.HTTPSPort)
	}
	mode, err := strconv.ParseUint(c.String("write-kubeconfig-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return cfg, fmt.Errorf("--write-kubeconfig-mode %q is not an octal file mode", c.String("write-kubeconfig-mode"))
	}
	cfg.WriteKubeconfigMod = os.FileMode(mode)
	if _, _, err := net.ParseCIDR(cfg.ServiceCIDR); err != nil {
		return cfg, fmt.Errorf("--service-cidr %q: %w", cfg.ServiceCIDR, err)
	}
	if _, _, err := net.ParseCIDR(cfg.ClusterCIDR); err != nil {
		return cfg, fmt.Errorf("--cluster-cidr %q: %w", cfg.ClusterCIDR, err)
	}
	if cfg.NodeMonitorGracePeriod < 10*time.Second {
		return cfg, fmt.Errorf("--node-monitor-grace-period %s is shorter than the 10s heartbeat interval", cfg.NodeMonitorGracePeriod)
	}
	if cfg.DefaultTolerationSeconds < 0 {
		return cfg, fmt.Errorf("--default-toleration-seconds %d is negative", cfg.DefaultTolerationSeconds)
	}
	// The verbosity first: --kube-*-arg=v=N still wins for one component.
	cfg.APIServerArgs = append(lc.componentArgs(), componentArgs(c.StringSlice("kube-apiserver-arg"))...)
	cfg.ControllerManagerArgs = append(lc.componentArgs(), componentArgs(c.StringSlice("kube-controller-manager-arg"))...)
	cfg.SchedulerArgs = append(lc.componentArgs(), componentArgs(c.StringSlice("kube-scheduler-arg"))...)
	return cfg, nil
}

// componentArgs turns name=value pairs into --name=value flags.
func componentArgs(pairs []string) []string {
	var args []string
	for _, a := range pairs {
		args = append(args, "--"+strings.TrimPrefix(a, "--"))
	}
	return args
}

// textPagesInterval: how often long-running commands unmap the parts of
// the executable they no longer use (internal/textpages).
const textPagesInterval = 15 * time.Second

// releaseTextPages unmaps them again after a forced collection
// (internal/memtrim), which reads the binary's stack maps and type data.
func releaseTextPages() { _, _ = textpages.Release() }

func runServer(c *cli.Context) error {
	lc, err := logConfigFrom(c)
	if err != nil {
		return err
	}
	cfg, err := serverConfig(c, lc)
	if err != nil {
		return err
	}
	cfg.Logger = newLogger(lc)
	cfg.AfterMemTrim = releaseTextPages
	if heapprof.FlagOn(cfg.APIServerArgs, "profiling") {
		// /debug/pprof/heap is served: sample from here on.
		heapprof.On()
	}
	if os.Getenv("GOGC") == "" {
		// The server's CPU goes to the GC more than anything else under
		// load; a GOGC set by the user is kept as it is.
		cfg.GC = &gctune.Config{Min: defaultGCPercent, Max: 100, Budget: gctune.DefaultBudget()}
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go textpages.Loop(ctx, textPagesInterval)
	if c.Bool("disable-agent") {
		return server.Run(ctx, cfg)
	}
	if os.Geteuid() != 0 {
		cfg.Logger.Warn("not running as root: the node agent needs root (containers, mounts, cgroups); running the control plane only (run with sudo, or pass --disable-agent to say so)")
		return server.Run(ctx, cfg)
	}
	// The server's own agent: joins over loopback with the node token,
	// once the API is ready, and shares the server's data directory.
	acfg, err := agentConfig(c)
	if err != nil {
		return err
	}
	if acfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		acfg.NodeName = strings.ToLower(h)
	}
	acfg.Logger = cfg.Logger.With("component", "agent")
	acfg.Server = fmt.Sprintf("https://127.0.0.1:%d", cfg.HTTPSPort)
	cfg.ControlPlaneNode = acfg.NodeName
	volumes := make(chan struct{})
	cfg.VolumeControllersStarted = volumes
	acfg.BeforeKubelet = func(ctx context.Context) error {
		select {
		case <-volumes:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	started := time.Now().Add(-time.Second)
	go func() { errs <- server.Run(ctx, cfg) }()
	go func() {
		// The agent starts with the server (its runtime needs no API) once
		// this run has written the join token; joining retries until the
		// API answers.
		tokenFile := filepath.Join(cfg.DataDir, "server", "node-token")
		var token []byte
		for {
			if st, err := os.Stat(tokenFile); err == nil && st.ModTime().After(started) {
				if token, err = os.ReadFile(tokenFile); err == nil {
					break
				}
			}
			select {
			case <-ctx.Done():
				errs <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		acfg.Token = strings.TrimSpace(string(token))
		if err := agent.Run(ctx, acfg); err != nil {
			errs <- err
			return
		}
		errs <- nil
	}()
	err = <-errs
	cancel()
	if err2 := <-errs; err == nil {
		err = err2
	}
	return err
}
