package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

func nodesimCommand() *cli.Command {
	return &cli.Command{
		Name:  "nodesim",
		Usage: "register simulated nodes that run pods without containers (for trying manifests and load tests)",
		Description: `Registers N nodes, keeps their Leases fresh and moves pods bound to them to Running
(Succeeded/Failed for pods that do not always restart). Annotate a node with
nodesim.skiff.dev/lost=true to make it stop heartbeating (node loss).`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig to use (default $KUBECONFIG, else " + defaultKubeconfig + ")"},
			&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Value: 3, Usage: "number of nodes"},
			&cli.StringFlag{Name: "name", Value: "nodesim", Usage: "simulator name; node names are <name>-<i>"},
			&cli.StringFlag{Name: "cpu", Value: "4", Usage: "CPU capacity per node"},
			&cli.StringFlag{Name: "memory", Value: "16Gi", Usage: "memory capacity per node"},
			&cli.StringFlag{Name: "max-pods", Value: "110", Usage: "pod capacity per node"},
			&cli.DurationFlag{Name: "run-duration", Value: time.Second, Usage: "how long pods that do not always restart run"},
			&cli.BoolFlag{Name: "delete-on-exit", Usage: "delete the nodes when stopped"},
		}, logFlags()...),
		Action: runNodesim,
	}
}

func runNodesim(c *cli.Context) error {
	capacity := v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
	for name, flag := range map[v1.ResourceName]string{v1.ResourceCPU: "cpu", v1.ResourceMemory: "memory", v1.ResourcePods: "max-pods"} {
		q, err := resource.ParseQuantity(c.String(flag))
		if err != nil {
			return fmt.Errorf("--%s %q: %w", flag, c.String(flag), err)
		}
		capacity[name] = q
	}
	if c.Int("nodes") < 1 {
		return fmt.Errorf("--nodes %d: need at least one node", c.Int("nodes"))
	}
	path := c.String("kubeconfig")
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		path = defaultKubeconfig
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	rc.QPS, rc.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	lc, err := logConfigFrom(c)
	if err != nil {
		return err
	}
	log := newLogger(lc)
	sim := nodesim.New(client, nodesim.Config{
		Name: c.String("name"), Nodes: c.Int("nodes"), Capacity: capacity,
		RunDuration: c.Duration("run-duration"), Logger: log,
	})
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := make(chan struct{})
	go func() {
		select {
		case <-ready:
			log.Info("simulated nodes registered", "nodes", c.Int("nodes"))
		case <-ctx.Done():
		}
	}()
	err = sim.Run(ctx, ready)
	if c.Bool("delete-on-exit") {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if derr := sim.Delete(dctx); derr != nil && err == nil {
			err = derr
		}
	}
	return err
}
