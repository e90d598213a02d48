package containerd

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
)

// ProcessName is argv[0] of the containerd child: the skiff binary runs
// Main when started under this name.
const ProcessName = "skiff-containerd"

// Main runs containerd in this process (the multicall child) and returns
// its exit code.
func Main(args []string) int {
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}
