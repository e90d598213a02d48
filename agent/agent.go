package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/skiff-sh/skiff/agent/checkconfig"
	"github.com/skiff-sh/skiff/agent/cni"
	"github.com/skiff-sh/skiff/agent/containerd"
	"github.com/skiff-sh/skiff/agent/join"
	"github.com/skiff-sh/skiff/agent/kubelet"
	"github.com/skiff-sh/skiff/agent/registries"
	"github.com/skiff-sh/skiff/embedded"
	"github.com/skiff-sh/skiff/internal/hostip"
)

// SandboxImage is the pause image every pod's sandbox runs.
const SandboxImage = "skiff.local/pause:3.10"

// Config configures an agent. cmd/ builds it from flags.
type Config struct {
	// DataDir is the skiff data directory; the agent uses DataDir/agent
	// and DataDir/data (extracted binaries).
	DataDir string
	// ConfigDir holds registries.yaml (/etc/skiff).
	ConfigDir string
	// RunDir holds sockets and runtime state (/run/skiff).
	RunDir string
	Server string
	Token  string
	// NodeName defaults to the host name; NodeIP to the address of the
	// default route.
	NodeName string
	NodeIP   net.IP
	Labels   map[string]string
	Taints   []string
	// Executable is the skiff binary (re-executed as containerd).
	Executable string
	// KubeletPort is the kubelet's HTTPS port (10250).
	KubeletPort   int
	ClusterDNS    string
	ClusterDomain string
	KubeletArgs   []string
	// BeforeKubelet, when set, must return before the kubelet starts (the
	// server's own agent waits for the controller manager's volume
	// plugins: see server.Config.VolumeControllersStarted).
	BeforeKubelet func(ctx context.Context) error
	// CgroupRoot parents the pods' cgroups (default /skiff); two agents on
	// one host (tests) need different ones.
	CgroupRoot string
	// ShimPerPod runs one containerd shim per pod (upstream) instead of one
	// per node.
	ShimPerPod bool
	Logger     *slog.Logger
}

func (c *Config) agentDir() string { return filepath.Join(c.DataDir, "agent") }

// Run runs the agent until ctx ends or a part of it fails.
func Run(ctx context.Context, c Config) error {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	if err := checkconfig.Error(checkconfig.Host()); err != nil {
		return fmt.Errorf("agent: %w (run `skiff check-config` for details)", err)
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent: node name: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	if c.NodeIP == nil {
		c.NodeIP = hostip.Detect()
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	token, err := join.ParseToken(c.Token)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// Upstream's kubelet exits the process when its port is taken; say
	// why before starting anything.
	if l, err := net.Listen("tcp", fmt.Sprintf(":%d", c.KubeletPort)); err != nil {
		return fmt.Errorf("agent: kubelet port %d is in use (another kubelet or skiff agent on this host? see --kubelet-port): %w", c.KubeletPort, err)
	} else {
		l.Close()
	}
	dir := c.agentDir()
	addrs := []string{c.NodeName, "localhost", "127.0.0.1"}
	if c.NodeIP != nil {
		addrs = append(addrs, c.NodeIP.String())
	}
	// The runtime (binaries, containerd, images) needs no server: start it
	// while joining, which may wait for a server that is still starting.
	type prepared struct {
		rt  *containerd.Process
		err error
	}
	prep := make(chan prepared, 1)
	cniConfDir := filepath.Join(dir, "etc", "cni", "net.d")
	prepCtx, cancelPrep := context.WithCancel(ctx)
	defer cancelPrep()
	go func() {
		rt, err := startRuntime(prepCtx, c, log, cniConfDir)
		prep <- prepared{rt, err}
	}()
	creds, err := joinWithRetry(ctx, log, join.Config{
		Server: c.Server, Token: token, NodeName: c.NodeName, Addresses: addrs,
		Dir: filepath.Join(dir, "cred"), Logger: log,
	})
	if err != nil {
		cancelPrep() // a refused join should end the agent at once
		if p := <-prep; p.rt != nil {
			p.rt.Stop()
		}
		return err
	}
	p := <-prep
	if p.err != nil {
		return p.err
	}
	rt := p.rt
	defer rt.Stop()
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, c.Server, creds); err != nil {
		return err
	}

	rest, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	go func() {
		if err := cni.Configure(ctx, cni.Config{Client: client, NodeName: c.NodeName, ConfDir: cniConfDir, Logger: log.With("component", "cni")}); err != nil && ctx.Err() == nil {
			log.Error("pod network configuration failed", "err", err)
		}
	}()
	go cni.RunHostPorts(ctx, client, c.NodeName, log.With("component", "hostports"))

	go annotateNode(ctx, log, client, c.NodeName, map[string]string{
		// Where the server's local-path provisioner puts this node's volumes.
		"skiff.dev/local-path-dir": filepath.Join(dir, "storage"),
	})

	dns := []string{}
	if c.ClusterDNS != "" {
		dns = append(dns, c.ClusterDNS)
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/skiff"
	}
	cgroupRoot, err := ensureCgroupRoot(strings.Trim(c.CgroupRoot, "/"))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.BeforeKubelet != nil {
		if err := c.BeforeKubelet(ctx); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	nodeIP := ""
	if c.NodeIP != nil {
		nodeIP = c.NodeIP.String()
	}
	kerr := make(chan error, 1)
	go func() {
		kerr <- kubelet.Run(ctx, kubelet.Config{
			NodeName:        c.NodeName,
			NodeIP:          nodeIP,
			RootDir:         filepath.Join(dir, "kubelet"),
			PodLogsDir:      filepath.Join(dir, "pod-logs"),
			Kubeconfig:      kubeconfig,
			ClientCA:        creds.CACert,
			ServingCert:     creds.ServingCert,
			ServingKey:      creds.ServingKey,
			RuntimeEndpoint: "unix://" + filepath.Join(c.RunDir, "containerd", "containerd.sock"),
			CgroupRoot:      cgroupRoot,
			ResolvConf:      resolvConf(),
			ClusterDNS:      dns,
			ClusterDomain:   c.ClusterDomain,
			Labels:          c.Labels,
			Taints:          c.Taints,
			Port:            c.KubeletPort,
			ExtraArgs:       c.KubeletArgs,
		})
	}()
	log.Info("agent started", "node", c.NodeName, "ip", c.NodeIP, "elapsed", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-kerr:
		if err == nil && ctx.Err() == nil {
			err = errors.New("kubelet stopped")
		}
		return err
	case err := <-rt.Done():
		return fmt.Errorf("agent: containerd exited: %v", err)
	case <-ctx.Done():
		return nil
	}
}

// startRuntime extracts the embedded binaries, starts containerd and
// imports the embedded and air-gap images.
func startRuntime(ctx context.Context, c Config, log *slog.Logger, cniConfDir string) (*containerd.Process, error) {
	dir := c.agentDir()
	version, err := embedded.Version()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	dataDir := filepath.Join(c.DataDir, "data")
	if _, err := embedded.ExtractBinaries(filepath.Join(dataDir, version, "bin")); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// Everything refers to data/current/bin: shims of containers started
	// by an earlier version find this version's runc through it.
	if err := pointCurrent(dataDir, version); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	removeOldAssets(dataDir, version, log)
	binDir := filepath.Join(dataDir, "current", "bin")
	// registries.yaml → hosts.toml files (mirrors, TLS) and credentials.
	regs, err := registries.Load(filepath.Join(c.ConfigDir, "registries.yaml"))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	registryDir := filepath.Join(dir, "etc", "containerd", "certs.d")
	if err := regs.WriteHosts(registryDir); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	auths := map[string]containerd.RegistryAuth{}
	for host, a := range regs.Auths() {
		auths[host] = containerd.RegistryAuth{Username: a.Username, Password: a.Password, Auth: a.Auth, IdentityToken: a.IdentityToken}
	}
	rt, err := containerd.Start(ctx, containerd.Config{
		Executable:        c.Executable,
		RootDir:           filepath.Join(dir, "containerd"),
		StateDir:          filepath.Join(c.RunDir, "containerd"),
		BinDir:            binDir,
		CNIConfDir:        cniConfDir,
		RegistryConfigDir: registryDir,
		RegistryAuths:     auths,
		SandboxImage:      SandboxImage,
		LogFile:           filepath.Join(dir, "containerd", "containerd.log"),
		ShimPerPod:        c.ShimPerPod,
		Logger:            log.With("component", "containerd"),
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := importImages(ctx, rt, c, log); err != nil {
		rt.Stop()
		return nil, err
	}
	// Decompressing the bundle (extraction, images) used 16 MiB windows
	// that are garbage now: hand them back to the OS instead of letting
	// the scavenger do it over minutes.
	go debug.FreeOSMemory()
	return rt, nil
}

// joinWithRetry joins, retrying transient failures (server unreachable or
// starting) with backoff and saying so; other failures end the agent.
func joinWithRetry(ctx context.Context, log *slog.Logger, c join.Config) (join.Credentials, error) {
	// Quick retries while a server is starting (the server's own agent
	// starts with it), then exponential backoff up to 30 s.
	start, delay := time.Now(), 200*time.Millisecond
	for {
		creds, err := join.Join(ctx, c)
		if err == nil || !join.IsTransient(err) {
			return creds, err
		}
		if time.Since(start) > 10*time.Second {
			delay = min(delay*2, 30*time.Second)
			log.Warn("cannot join yet, retrying", "err", err, "in", delay)
		}
		select {
		case <-ctx.Done():
			return creds, fmt.Errorf("agent: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

func writeKubeconfig(path, server string, creds join.Credentials) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skiff"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: creds.CACert,
		DisableCompression: hostip.IsLoopbackURL(server)}
	cfg.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificate: creds.ClientCert, ClientKey: creds.ClientKey}
	cfg.Contexts["skiff"] = &clientcmdapi.Context{Cluster: "skiff", AuthInfo: "node"}
	cfg.CurrentContext = "skiff"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("agent: kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

func importImages(ctx context.Context, rt *containerd.Process, c Config, log *slog.Logger) error {
	sock := filepath.Join(c.RunDir, "containerd", "containerd.sock")
	err := embedded.ForEachImage(func(name string, tarball io.Reader) error {
		names, err := containerd.Import(ctx, sock, tarball, true)
		if err != nil {
			return fmt.Errorf("embedded image %s: %w", name, err)
		}
		log.Debug("imported embedded image", "images", names)
		return nil
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := containerd.ImportDir(ctx, sock, filepath.Join(c.agentDir(), "images"), log); err != nil {
		return fmt.Errorf("agent: air-gap images: %w", err)
	}
	return nil
}

// resolvConf picks the DNS configuration pods with dnsPolicy Default get:
// the host's, unless it only names a loopback resolver (systemd-resolved),
// which a pod cannot reach; then the upstream list resolved keeps.
func resolvConf() string {
	for _, p := range []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"} {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if !onlyLoopback(string(data)) {
			return p
		}
	}
	return "/etc/resolv.conf"
}

func onlyLoopback(conf string) bool {
	seen := false
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			seen = true
			if ip := net.ParseIP(f[1]); ip == nil || !ip.IsLoopback() {
				return false
			}
		}
	}
	return seen
}

// annotateNode sets annotations on the node once it is registered.
func annotateNode(ctx context.Context, log *slog.Logger, client kubernetes.Interface, node string, ann map[string]string) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err == nil, nil
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("cannot annotate the node", "err", err)
	}
}

// pointCurrent makes dataDir/current a symlink to version, atomically.
func pointCurrent(dataDir, version string) error {
	link := filepath.Join(dataDir, "current")
	if target, err := os.Readlink(link); err == nil && target == version {
		return nil
	}
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}

// removeOldAssets deletes the binaries extracted by earlier versions of
// skiff (data/<other hash>). Running shims keep their executables open, so
// their containers are not affected.
func removeOldAssets(dataDir, keep string, log *slog.Logger) {
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == keep || len(e.Name()) != len(keep) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dataDir, e.Name())); err != nil {
			log.Warn("cannot remove old runtime binaries", "dir", e.Name(), "err", err)
		}
	}
}
