// Command skiff is a whole Kubernetes-compatible cluster in one binary:
// `skiff server` runs the control plane, `skiff kubectl` is the upstream
// kubectl. Flags are turned into per-subsystem config structs here; the
// server and agent packages never see CLI types.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent/containerd"
	"github.com/skiff-sh/skiff/agent/containerd/child"
	"github.com/skiff-sh/skiff/internal/heapprof"
	// Before kubectl's packages initialise: see the package comment.
	_ "github.com/skiff-sh/skiff/cmd/skiff/internal/kubectli18n"
)

// Set by the build (-ldflags -X main.version=...).
var version = "dev"

// defaultGCPercent is the GC target when $GOGC is unset: the agent's and
// the tools', and the floor of `skiff server`'s adaptive target
// (internal/gctune), which goes up to Go's default of 100 while the heap's
// headroom fits a budget. Measured on the server under the API benchmark:
// GOGC 50 holds ~40% less peak anonymous memory than 100, and spends ~20%
// more CPU on the same work.
const defaultGCPercent = 50

func main() {
	// Before anything allocates much: every process of the binary,
	// containerd's included (internal/heapprof).
	heapprof.Off()
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
		// Repeatable flags keep commas: --kube-apiserver-arg=feature-gates=A=true,B=false
		// is one flag (as in k3s). Flags that take lists split them
		// themselves (splitList).
		DisableSliceFlagSeparator: true,
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

// splitList returns the comma-separated items of a repeatable flag's
// values (--tls-san a,b --tls-san c), empty items dropped.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// absDir returns dir as an absolute path: certificates and kubeconfigs
// written under it name files by path, and a relative one would be read
// relative to the kubeconfig's own directory.
func absDir(flag, dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("--%s %q: %w", flag, dir, err)
	}
	return abs, nil
}
