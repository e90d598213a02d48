// Package child is the containerd side of Skiff's multicall binary: the
// plugins Skiff's containerd carries and Main, which runs containerd in the
// re-executed process. It is separate from package containerd (which
// starts and talks to it) so that only the binary links the daemon.
package child

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
)

// Main runs containerd in this process (the multicall child) and returns
// its exit code.
func Main(args []string) int {
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}
