// Package child is the containerd side of Skiff's multicall binary: the
// plugins Skiff's containerd carries and Main, which runs containerd in the
// re-executed process. It is separate from package containerd (which
// starts and talks to it) so that only the binary links the daemon.
package child

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	"github.com/skiff-sh/skiff/internal/memtrim"
	"github.com/skiff-sh/skiff/internal/textpages"
)

// textPagesInterval: how often the child unmaps the parts of the
// executable it no longer uses (internal/textpages).
const textPagesInterval = 15 * time.Second

// Main runs containerd in this process (the multicall child) and returns
// its exit code.
func Main(args []string) int {
	// This process maps the whole skiff binary but runs only containerd:
	// unmap what start-up touched (every package's initialisation).
	go textpages.Loop(context.Background(), textPagesInterval)
	// containerd's heap is small (~10 MB live at idle) and what image
	// imports and pod starts leave behind stays mapped for minutes: hand
	// it back once the runtime is quiet (internal/memtrim).
	go memtrim.Loop(context.Background(), memtrim.Config{Interval: 5 * time.Second, Threshold: 2 << 20, Quiet: 8 << 20,
		AfterTrim: func() { _, _ = textpages.Release() }})
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}
