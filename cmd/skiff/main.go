// Command skiff is a whole Kubernetes-compatible cluster in one binary:
// `skiff server` runs the control plane, `skiff kubectl` is the upstream
// kubectl. Flags are turned into per-subsystem config structs here; the
// server and agent packages never see CLI types.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// Set by the build (-ldflags -X main.version=...).
var version = "dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "skiff:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "skiff",
		Usage:   "a whole Kubernetes cluster in one binary",
		Version: version,
		Commands: []*cli.Command{
			serverCommand(),
			kubectlCommand(),
		},
	}
}
