package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/klauspost/compress/zstd"
)

// ProcessName is argv[0] of the containerd child: the skiff binary runs
// child.Main when started under this name.
const ProcessName = "skiff-containerd"

// Namespace is the containerd namespace of the CRI plugin.
const Namespace = "k8s.io"

// Config places the runtime's files.
type Config struct {
	// Executable is the skiff binary, re-executed as containerd.
	Executable string
	// RootDir holds content, snapshots and metadata (persistent).
	RootDir string
	// StateDir holds sockets and runtime state (/run/skiff/containerd).
	StateDir string
	// BinDir holds runc, the shim and the CNI plugins.
	BinDir string
	// CNIConfDir is where the agent writes the pod network config.
	CNIConfDir string
	// RegistryConfigDir holds per-registry hosts.toml files (mirrors,
	// credentials); empty for none.
	RegistryConfigDir string
	// RegistryAuths are credentials by registry host (registries.yaml).
	RegistryAuths map[string]RegistryAuth
	// SandboxImage is the pause image reference.
	SandboxImage string
	// LogFile receives containerd's output.
	LogFile string
	// ShimPerPod restores upstream's one runc shim per pod; by default one
	// shim serves every container of the node (embedded/build/shim).
	ShimPerPod bool
	Logger     *slog.Logger
}

// RegistryAuth is a registry login for the CRI plugin.
type RegistryAuth struct {
	Username, Password, Auth, IdentityToken string
}

// Socket is containerd's gRPC socket (also its CRI endpoint).
func (c Config) Socket() string { return filepath.Join(c.StateDir, "containerd.sock") }

var configTemplate = template.Must(template.New("config").Parse(`# Written by skiff at every agent start; edits are lost.
version = 3
root = {{printf "%q" .RootDir}}
state = {{printf "%q" .StateDir}}
oom_score = 0

[grpc]
  address = {{printf "%q" .Socket}}

[ttrpc]
  address = {{printf "%q" (print .Socket ".ttrpc")}}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = {{printf "%q" .SandboxImage}}
  [plugins."io.containerd.cri.v1.images".registry]
{{- if .RegistryConfigDir}}
    config_path = {{printf "%q" .RegistryConfigDir}}
{{- end}}
{{- range $host, $a := .RegistryAuths}}
    [plugins."io.containerd.cri.v1.images".registry.configs.{{printf "%q" $host}}.auth]
      username = {{printf "%q" $a.Username}}
      password = {{printf "%q" $a.Password}}
      auth = {{printf "%q" $a.Auth}}
      identitytoken = {{printf "%q" $a.IdentityToken}}
{{- end}}

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  restrict_oom_score_adj = {{.RestrictOOM}}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = {{printf "%q" (print .BinDir "/runc")}}
        # runc's container state: under Skiff's state directory, not in
        # the default a host containerd uses for its own containers.
        Root = {{printf "%q" (print .StateDir "/runc")}}
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{{printf "%q" .BinDir}}]
    conf_dir = {{printf "%q" .CNIConfDir}}
    # containerd brings the pod's lo up itself: one plugin execution less
    # per pod set-up and tear-down than the loopback plugin.
    use_internal_loopback = true

# NRI keeps its socket and plugins in Skiff's directories, not the
# defaults a host containerd may use.
[plugins."io.containerd.nri.v1.nri"]
  socket_path = {{printf "%q" (print .StateDir "/nri.sock")}}
  plugin_path = {{printf "%q" (print .RootDir "/nri/plugins")}}
  plugin_config_path = {{printf "%q" (print .RootDir "/nri/conf.d")}}

# Shim sockets: Skiff's own directory, not the default a host
# containerd uses.
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = {{printf "%q" .ShimSocketDir}}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`))

// maxShimSocketDir is the longest shim socket directory containerd
// accepts: a socket path (directory, "/", 64 hex digits) must fit the
// kernel's 108 bytes.
const maxShimSocketDir = 42

// fallbackShimSocketDir holds shim sockets when the state directory's path
// is too long for them. Socket names hash containerd's address, so the
// nodes of several agents on one host do not collide there.
const fallbackShimSocketDir = "/run/skiff/s"

// ShimSocketDir is where the shims' sockets go: under the state directory
// when its path is short enough.
func (c Config) ShimSocketDir() string {
	if d := filepath.Join(c.StateDir, "s"); len(d) <= maxShimSocketDir {
		return d
	}
	return fallbackShimSocketDir
}

// Render returns containerd's config.toml for c.
func (c Config) Render(restrictOOM bool) ([]byte, error) {
	var b bytes.Buffer
	err := configTemplate.Execute(&b, struct {
		Config
		Socket      string
		RestrictOOM bool
	}{c, c.Socket(), restrictOOM})
	return b.Bytes(), err
}

// Process is a running containerd child.
type Process struct {
	cmd  *exec.Cmd
	done chan error
	cfg  Config
}

// Start writes the configuration and starts containerd, returning once
// its socket answers.
func Start(ctx context.Context, c Config) (*Process, error) {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{c.RootDir, c.StateDir, c.CNIConfDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("containerd: %w", err)
		}
	}
	restrict := !canLowerOOMScore()
	if restrict {
		log.Warn("this host denies lowering oom_score_adj (no CAP_SYS_RESOURCE); containers keep the runtime's OOM score")
	}
	data, err := c.Render(restrict)
	if err != nil {
		return nil, fmt.Errorf("containerd: config: %w", err)
	}
	cfgPath := filepath.Join(c.RootDir, "config.toml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	logf, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("containerd: log: %w", err)
	}
	defer logf.Close()
	cmd := &exec.Cmd{
		Path:   c.Executable,
		Args:   []string{ProcessName, "--config", cfgPath},
		Stdout: logf,
		Stderr: logf,
		// The shims it starts find runc and each other here first.
		Env: childEnv(c.BinDir, c.ShimPerPod),
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGTERM,
			Setpgid:   true,
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("containerd: start: %w", err)
	}
	p := &Process{cmd: cmd, done: make(chan error, 1), cfg: c}
	go func() { p.done <- cmd.Wait() }()
	if err := p.waitServing(ctx, 60*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("containerd: %w (log: %s)", err, c.LogFile)
	}
	log.Info("containerd running", "pid", cmd.Process.Pid, "socket", c.Socket())
	return p, nil
}

// childEnv is containerd's environment (its shims inherit it): the bin
// directory first on PATH, no systemd notify socket, GOGC=50 unless set
// (as skiff itself runs: less idle heap for the same work), and the shim
// grouping.
func childEnv(binDir string, shimPerPod bool) []string {
	var out []string
	gogc := false
	for _, e := range os.Environ() {
		switch {
		case strings.HasPrefix(e, "PATH="), strings.HasPrefix(e, "NOTIFY_SOCKET="),
			strings.HasPrefix(e, shimGroupingEnv+"="):
		case strings.HasPrefix(e, "GOGC="):
			gogc = true
			out = append(out, e)
		default:
			out = append(out, e)
		}
	}
	if !gogc {
		out = append(out, "GOGC=50")
	}
	grouping := "node"
	if shimPerPod {
		grouping = "pod"
	}
	return append(out, shimGroupingEnv+"="+grouping, "PATH="+binDir+":"+os.Getenv("PATH"))
}

// shimGroupingEnv tells Skiff's runc shim to serve the whole node ("node")
// or one pod per process ("pod", upstream's grouping).
const shimGroupingEnv = "SKIFF_SHIM_GROUPING"

func (p *Process) waitServing(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited during start: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not serving on %s: %w", p.cfg.Socket(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := os.Stat(p.cfg.Socket()); err != nil {
			continue
		}
		cl, err := containerd.New(p.cfg.Socket(), containerd.WithTimeout(time.Second))
		if err != nil {
			continue
		}
		ok, err := cl.IsServing(ctx)
		cl.Close()
		if err == nil && ok {
			return nil
		}
	}
}

// Done delivers containerd's exit.
func (p *Process) Done() <-chan error { return p.done }

// Stop ends containerd (SIGTERM, then SIGKILL after 10 s). Running
// containers keep running under their shims.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// canLowerOOMScore reports whether this process may lower its
// oom_score_adj (CAP_SYS_RESOURCE, which some sandboxes deny to root),
// by trying it and restoring the old value.
func canLowerOOMScore() bool {
	const path = "/proc/self/oom_score_adj"
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || cur <= -1000 {
		return err == nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(cur-1)), 0o644); err != nil {
		return false
	}
	_ = os.WriteFile(path, []byte(strconv.Itoa(cur)), 0o644)
	return true
}

// ImportOptions label imported images the way the CRI plugin labels the
// images it pulls, so the kubelet sees them.
const (
	criImageLabel  = "io.cri-containerd.image"
	criPinnedLabel = "io.cri-containerd.pinned"
)

// Import loads an image tarball (OCI layout or docker save) into the CRI
// namespace and unpacks it, returning the image names. pinned images are
// never garbage-collected by the kubelet.
func Import(ctx context.Context, socket string, r io.Reader, pinned bool) ([]string, error) {
	cl, err := containerd.New(socket, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	defer cl.Close()
	ctx = namespaces.WithNamespace(ctx, Namespace)
	labels := map[string]string{criImageLabel: "managed"}
	if pinned {
		labels[criPinnedLabel] = "pinned"
	}
	imgs, err := cl.Import(ctx, r, containerd.WithImageLabels(labels), containerd.WithSkipMissing())
	if err != nil {
		return nil, fmt.Errorf("containerd: import: %w", err)
	}
	var names []string
	for _, im := range imgs {
		if err := containerd.NewImage(cl, im).Unpack(ctx, "overlayfs"); err != nil {
			return nil, fmt.Errorf("containerd: unpack %s: %w", im.Name, err)
		}
		names = append(names, im.Name)
	}
	return names, nil
}

// ImportDir imports every *.tar, *.tar.zst and *.tar.gz... in dir (the
// air-gap images directory). A missing directory is not an error.
func ImportDir(ctx context.Context, socket, dir string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("containerd: images dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".tar") || strings.HasSuffix(name, ".tar.zst")) {
			continue
		}
		if err := importFile(ctx, socket, filepath.Join(dir, name), log); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func importFile(ctx context.Context, socket, path string, log *slog.Logger) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".zst") {
		dec, err := zstd.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer dec.Close()
		r = dec
	}
	start := time.Now()
	names, err := Import(ctx, socket, r, false)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	log.Info("imported image tarball", "file", path, "images", names, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
