// Command containerd-shim-runc-v2 is the upstream containerd runc shim
// (v2 task API, upstream task service) with one change: by default every
// container of a containerd namespace is served by ONE shim process per
// node instead of one per pod.
//
// Upstream groups the containers of a pod into one shim through the
// "io.containerd.runc.v2.group" or "io.kubernetes.cri.sandbox-id"
// annotation; the task service is built to serve many containers, and it
// exits only when the last one is deleted. A Go shim costs ~5 MB of
// anonymous memory and two executions of its binary per pod; on a 512 MB
// board that is most of the per-pod overhead, so Skiff groups by node.
//
// SKIFF_SHIM_GROUPING=pod in containerd's environment restores the upstream
// per-pod grouping (the agent's --shim-grouping flag sets it).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// runtimeName is the runtime type containerd resolves to this binary.
const runtimeName = "io.containerd.runc.v2"

// groupingEnv selects "node" (default) or "pod" (upstream) grouping.
const groupingEnv = "SKIFF_SHIM_GROUPING"

func main() {
	up := manager.NewShimManager(runtimeName)
	if os.Getenv(groupingEnv) == "pod" {
		shim.RunShim(context.Background(), up)
		return
	}
	shim.RunShim(context.Background(), nodeShim{Shim: up})
}

// nodeShim is the upstream shim manager with Start replaced: the socket
// address is derived from the namespace alone, so the first container
// starts the node's shim and every later one connects to it. Stop (the
// "delete" action after a shim died), Info and the task service are
// upstream's.
type nodeShim struct {
	shim.Shim
}

func (n nodeShim) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	socketDir := p.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, p.GetContainerdGrpcAddress(), "skiff-node-shim", false)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}

	l, err := listen(addr)
	if errors.Is(err, errRunning) {
		return result, nil
	}
	if err != nil {
		return nil, err
	}
	f, err := l.File()
	l.SetUnlinkOnClose(false) // the child serves the socket through f
	l.Close()
	if err != nil {
		_ = shim.RemoveSocket(addr)
		return nil, fmt.Errorf("shim socket file: %w", err)
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-namespace", ns, "-id", p.GetInstanceID(), "-address", p.GetContainerdGrpcAddress())
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = shim.RemoveSocket(addr)
		return nil, fmt.Errorf("start shim: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped; the daemon outlives this process
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = shim.RemoveSocket(addr)
		return nil, fmt.Errorf("shim OOM score: %w", err)
	}
	return result, nil
}

// errRunning: the node's shim is already serving at the address.
var errRunning = errors.New("shim running")

// listen binds the node shim's socket, or reports errRunning when a live
// shim answers there. A socket left by a shim that exited is replaced.
func listen(addr string) (*net.UnixListener, error) {
	l, err := shim.NewSocket(addr)
	if err == nil {
		return l, nil
	}
	if !shim.SocketEaddrinuse(err) {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	if shim.CanConnect(addr) {
		return nil, errRunning
	}
	if err := shim.RemoveSocket(addr); err != nil {
		return nil, fmt.Errorf("remove stale shim socket: %w", err)
	}
	l, err = shim.NewSocket(addr)
	if err != nil {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	return l, nil
}
