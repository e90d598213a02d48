package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent/cni"
	"github.com/skiff-sh/skiff/agent/killall"
)

func killallCommand() *cli.Command {
	return &cli.Command{
		Name:  "killall",
		Usage: "stop every pod container and shim of this node's agent and unmount its volumes (run after stopping skiff)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: "/var/lib/skiff", EnvVars: []string{"SKIFF_DATA_DIR"}},
			&cli.StringFlag{Name: "run-dir", Value: "/run/skiff"},
			&cli.StringFlag{Name: "cgroup-root", Value: "/skiff", Usage: "cgroup parent of the node's pods"},
		},
		Action: func(c *cli.Context) error {
			// Mounts are matched by absolute path, as the agent made its data dir.
			dataDir, err := absDir("data-dir", c.String("data-dir"))
			if err != nil {
				return fmt.Errorf("killall: %w", err)
			}
			if err := killall.Run(killall.Config{CgroupRoot: c.String("cgroup-root"), RunDir: c.String("run-dir"), DataDir: dataDir, Bridge: cni.Bridge}); err != nil {
				return fmt.Errorf("killall: %w", err)
			}
			if err := cni.RemoveMasquerade(); err != nil {
				return fmt.Errorf("killall: %w", err)
			}
			if err := cni.RemoveHostPorts(); err != nil {
				return fmt.Errorf("killall: %w", err)
			}
			return nil
		},
	}
}
