// Command skiff is a whole Kubernetes-compatible cluster in one binary:
// `skiff server` runs the control plane, `skiff kubectl` is the upstream
// kubectl. Flags are turned into per-subsystem config structs here; the
// server and agent packages never see CLI types.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent/containerd"
	"github.com/skiff-sh/skiff/agent/containerd/child"
	// Before kubectl's packages initialise: see the package comment.
	_ "github.com/skiff-sh/skiff/cmd/skiff/internal/kubectli18n"
)

// Set by the build (-ldflags -X main.version=...).
var version = "dev"

// defaultGCPercent is the GC target when $GOGC is unset. Measured on the
// server under the API benchmark: same throughput as Go's default of 100,
// ~20 MB less idle and ~60 MB less peak anonymous memory.
const defaultGCPercent = 50

func main() {
	// Multicall: the agent starts containerd by re-executing this binary
	// under containerd.ProcessName.
	if filepath.Base(os.Args[0]) == containerd.ProcessName {
		os.Exit(child.Main(os.Args))
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	startupProfile()
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
			agentCommand(),
			killallCommand(),
			kubectlCommand(),
			nodesimCommand(),
			checkConfigCommand(),
		},
	}
}
