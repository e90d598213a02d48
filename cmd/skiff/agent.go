package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent"
	"github.com/skiff-sh/skiff/internal/memtrim"
	"github.com/skiff-sh/skiff/internal/textpages"
)

// agentFlags are shared by `skiff agent` and `skiff server` (which runs
// an agent unless --disable-agent).
func agentFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "node-name", Usage: "node name (default: host name)", EnvVars: []string{"SKIFF_NODE_NAME"}},
		&cli.StringFlag{Name: "node-ip", Aliases: []string{"i"}, Usage: "IP address the node advertises (default: address of the default route)"},
		&cli.StringSliceFlag{Name: "node-label", Usage: "label to register the node with (key=value, repeatable, or comma-separated)"},
		&cli.StringSliceFlag{Name: "node-taint", Usage: "taint to register the node with (key=value:Effect, repeatable, or comma-separated)"},
		&cli.IntFlag{Name: "kubelet-port", Value: 10250, Usage: "port of the node's kubelet API (HTTPS; only the API server may call it)"},
		&cli.StringSliceFlag{Name: "kubelet-arg", Usage: "extra flag for the embedded kubelet (name=value, repeatable; commas belong to the value)"},
		&cli.StringFlag{Name: "config-dir", Value: "/etc/skiff", Usage: "directory of registries.yaml"},
		&cli.StringFlag{Name: "run-dir", Value: "/run/skiff", Usage: "directory for sockets and runtime state"},
		&cli.StringFlag{Name: "cluster-dns", Value: "10.43.0.10", Usage: "cluster DNS address pods use"},
		&cli.StringFlag{Name: "cluster-domain", Value: "cluster.local", Usage: "cluster DNS domain"},
		&cli.StringFlag{Name: "cgroup-root", Value: "/skiff", Usage: "cgroup parent of the node's pods (one per agent on a host)"},
		&cli.StringFlag{Name: "shim-grouping", Value: "node", Usage: "containerd runc shims: one serving the whole node (node, ~5 MB less per pod) or one per pod (pod, as upstream)"},
	}
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "join a cluster as a node and run its pods",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "server", Aliases: []string{"s"}, Usage: "server URL (https://host:6443)", EnvVars: []string{"SKIFF_URL"}},
			&cli.StringFlag{Name: "token", Aliases: []string{"t"}, Usage: "join token (K10<ca-hash>::server:<secret> from the server's node-token file)", EnvVars: []string{"SKIFF_TOKEN"}},
			&cli.StringFlag{Name: "token-file", Usage: "read the join token from this file", EnvVars: []string{"SKIFF_TOKEN_FILE"}},
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: "/var/lib/skiff", Usage: "directory for node state", EnvVars: []string{"SKIFF_DATA_DIR"}},
		}, append(agentFlags(), logFlags()...)...),
		Action: func(c *cli.Context) error {
			cfg, err := agentConfig(c)
			if err != nil {
				return err
			}
			if cfg.Server == "" {
				return fmt.Errorf("--server (or $SKIFF_URL) is required")
			}
			token := c.String("token")
			if f := c.String("token-file"); f != "" && token == "" {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				token = strings.TrimSpace(string(b))
			}
			if token == "" {
				return fmt.Errorf("--token (or $SKIFF_TOKEN, --token-file) is required")
			}
			cfg.Token = token
			lc, err := logConfigFrom(c)
			if err != nil {
				return err
			}
			cfg.Logger = newLogger(lc)
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			go textpages.Loop(ctx, textPagesInterval)
			// A node agent's heap is small and its work comes in bursts
			// (image imports, pod starts): hand back what a burst left.
			go memtrim.Loop(ctx, memtrim.Config{Interval: 5 * time.Second, Threshold: 4 << 20, Quiet: 16 << 20, Logger: cfg.Logger, AfterTrim: releaseTextPages})
			return agent.Run(ctx, cfg)
		},
	}
}

// agentConfig converts the agent flags (and --data-dir) into a config.
func agentConfig(c *cli.Context) (agent.Config, error) {
	exe, err := os.Executable()
	if err != nil {
		return agent.Config{}, fmt.Errorf("cannot find the skiff binary: %w", err)
	}
	dataDir, err := absDir("data-dir", c.String("data-dir"))
	if err != nil {
		return agent.Config{}, err
	}
	cfg := agent.Config{
		DataDir:       dataDir,
		ConfigDir:     c.String("config-dir"),
		RunDir:        c.String("run-dir"),
		Server:        c.String("server"),
		NodeName:      strings.ToLower(c.String("node-name")),
		Taints:        splitList(c.StringSlice("node-taint")),
		Executable:    exe,
		KubeletPort:   c.Int("kubelet-port"),
		ClusterDNS:    c.String("cluster-dns"),
		ClusterDomain: c.String("cluster-domain"),
		KubeletArgs:   componentArgs(c.StringSlice("kubelet-arg")),
		CgroupRoot:    c.String("cgroup-root"),
	}
	switch g := c.String("shim-grouping"); g {
	case "node":
	case "pod":
		cfg.ShimPerPod = true
	default:
		return cfg, fmt.Errorf("--shim-grouping %q: want node or pod", g)
	}
	if ip := c.String("node-ip"); ip != "" {
		if cfg.NodeIP = net.ParseIP(ip); cfg.NodeIP == nil {
			return cfg, fmt.Errorf("--node-ip %q is not an IP address", ip)
		}
	}
	if net.ParseIP(cfg.ClusterDNS) == nil {
		return cfg, fmt.Errorf("--cluster-dns %q is not an IP address", cfg.ClusterDNS)
	}
	cfg.Labels = map[string]string{}
	for _, l := range splitList(c.StringSlice("node-label")) {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--node-label %q: want key=value", l)
		}
		cfg.Labels[k] = v
	}
	if cfg.KubeletPort <= 0 || cfg.KubeletPort > 65535 {
		return cfg, fmt.Errorf("--kubelet-port %d is out of range", cfg.KubeletPort)
	}
	return cfg, nil
}
