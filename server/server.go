// Package server wires the Skiff control plane together: it prepares the
// data directory and PKI, opens the storage backend, serves it through the
// etcd API on a private unix socket, runs the Kubernetes API server, and
// writes the admin kubeconfig once the API is ready.
package server

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/skiff-sh/skiff/internal/gctune"
	"github.com/skiff-sh/skiff/internal/hostip"
	"github.com/skiff-sh/skiff/internal/memtrim"
	"github.com/skiff-sh/skiff/server/apiserver"
	"github.com/skiff-sh/skiff/server/controllers"
	"github.com/skiff-sh/skiff/server/informerpool"
	"github.com/skiff-sh/skiff/server/join"
	"github.com/skiff-sh/skiff/server/leader"
	"github.com/skiff-sh/skiff/server/localpath"
	"github.com/skiff-sh/skiff/server/pki"
	"github.com/skiff-sh/skiff/server/scheduler"
	"github.com/skiff-sh/skiff/server/storage/bolt"
	"github.com/skiff-sh/skiff/server/storage/etcdapi"
)

// Config configures a server. cmd/ builds it from flags.
type Config struct {
	DataDir            string
	BindAddress        net.IP
	AdvertiseAddress   net.IP // nil: detected
	HTTPSPort          int
	TLSSANs            []string
	WriteKubeconfig    string
	WriteKubeconfigMod os.FileMode
	Token              string // cluster secret; generated when empty and none stored
	ServiceCIDR        string
	NodePortRange      string
	APIServerArgs      []string
	// ClusterCIDR is the pod network; each node gets a /24 from it.
	ClusterCIDR string
	// Node loss: a node without heartbeats for NodeMonitorGracePeriod is
	// marked unreachable, and its pods are evicted after the toleration
	// (seconds) pods get by default for the not-ready/unreachable taints.
	NodeMonitorGracePeriod   time.Duration
	DefaultTolerationSeconds int
	ControllerManagerArgs    []string
	SchedulerArgs            []string
	DisableControllerManager bool
	DisableScheduler         bool
	// ControlPlaneNode, when set, is the node of the agent running with
	// this server; it is labelled node-role.kubernetes.io/control-plane.
	ControlPlaneNode string
	Logger           *slog.Logger
	// VolumeControllersStarted, when set, is closed once the controller
	// manager's volume controllers have initialized their volume plugins
	// (see waitVolumeControllers); an in-process kubelet must start after.
	VolumeControllersStarted chan<- struct{}
	// Ready, when set, is closed once the API answers /readyz.
	Ready chan<- struct{}
	// AfterMemTrim, when set, runs each time the server has handed idle
	// heap back to the OS (memtrim.Config.AfterTrim).
	AfterMemTrim func()
	// GC, when set, adapts the GC target to the live heap once the server
	// has settled after ready (internal/gctune, startGC); otherwise the
	// process's GOGC is restored then.
	GC *gctune.Config
}

// memTrim: once ready, a quiet server hands idle heap back to the OS
// (internal/memtrim): checked every 5 s, when at least 3 MB would come
// back and the server allocated at most 32 MB since the last check. An
// idle API server with controllers and scheduler allocates ~0.5 MB/s, so
// this caps its idle garbage at ~3 MB where the runtime lets it reach
// GOGC% of the live heap (~30 MB) before collecting, at the cost of a
// collection every ~6 s. Measured: 6 MB against 3 MB averaged ~1.5 MB
// more idle RssAnon (whole server; ~0.5 MB API only), 12 MB ~1 MB more
// again, for no measurable difference in idle CPU
// (bench-results/idle-goroutines-heap-20261204.txt,
// idle-watch-informer-goroutines-20261205.txt); under load (hundreds of
// MB/s) it does nothing.
func memTrim(log *slog.Logger, after func()) memtrim.Config {
	return memtrim.Config{Interval: 5 * time.Second, Threshold: 3 << 20, Quiet: 32 << 20, Logger: log, AfterTrim: after}
}

// startGC is the server's GC targets through start-up (gctune.Startup):
// GOGC 30 until the API server serves, 10 from then until 10 s after
// ready or until load arrives, then tune (gctune.Run), or the process's
// GOGC when tune is nil. Load is more than 200 writes/s (a client load:
// 500-2000; idle, the whole server with its node writes ~75 in the first
// half second after ready, then under 10/s), or from 1 s after ready
// more than 16 MB/s allocated (idle: ~40 MB in the first second, then
// ~2.5 MB/s; a client load 50-150 MB/s), both over half a second; or
// more than 100 writes in any 100 ms check (the whole server's idle
// start wrote at most 12 in one, and 40 in a half second). Before, only
// 256 MB allocated ended it early: ConfigMap creates right after ready
// ran at half the rate of creates after settling (bench-results/startup-
// gc-load-20261205.txt). Without the 100 ms rule the first ~0.5 s of such
// a load still ran at GOGC 10, ~20 collections, and 3000 creates right
// after ready took ~25% more server CPU than the same creates later
// (bench-results/session56-settle-burst-20261208.txt).
//
// Go never moves objects, and the fewer collections run while the
// long-lived heap is built among start-up garbage, the more sparsely it
// ends up spread over spans that cannot be returned. Measured (idle
// RssAnon averaged over a minute; bench-results/startup-gc-phases-
// 20261205.txt): GOGC 10 from serving to ready, against 30, ~2.4 MB less
// for the API server alone (40.9 → 38.5 MB) with no measurable cost in
// time to ready (GOGC 10 over the whole start-up gained as much and cost
// ~250 ms; 10 in any one phase before serving gained nothing); also
// holding it 10 s past ready, while the controllers and the node start,
// took the whole server from ~56 to ~47 MB. Earlier: GOGC 150 against 30 until
// ready cost ~3 MB, the GC off below a 256 MB ceiling 12-15 MB.
//
// After start-up, a CustomResourceDefinition added or changed
// (apiserver.Config.CRDChanged) holds GOGC 30 (gctune.StartupRun.Settle)
// for 10 s after the last one, or until more than 200 writes/s arrive:
// the server builds the resource's long-lived serving state then, at the
// tuner's GOGC 100 as sparse as start-up's. Measured with 20 CRDs (whole
// server, RssAnon 15 s after; bench-results/crd-settle-20261205.txt):
// growth +23 MB at the tuner's target; holding 50 +17-18, 40 +17, 30
// +15, 20 +14, 10 +11-13. At 30 the server's CPU for the install went
// from ~1.1-1.4 s to ~1.75-1.95 s (3.3 s at 10) and the time until all 20
// were served from ~2.8-2.9 to ~3.1-3.3 s (4.0 s at 10; upstream ~3.4).
func startGC(log *slog.Logger, tune *gctune.Config) gctune.Startup {
	s := gctune.Startup{Percent: 30, SettlePercent: 10, SettleTime: 10 * time.Second,
		SettleWrites: 200, SettleRate: 16 << 20, SettleGrace: time.Second, SettleBurst: 100, HoldPercent: 30}
	if tune != nil {
		t := *tune
		t.OnChange = func(p int) { log.Debug("GC target", "GOGC", p) }
		s.Tune = &t
	}
	return s
}

func (c *Config) serverDir() string { return filepath.Join(c.DataDir, "server") }

// Run runs the control plane until ctx ends.
func Run(ctx context.Context, c Config) error {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	// Collect more often until the server has settled (startGC).
	gc := startGC(log, c.GC).Begin()
	defer gc.Stop()
	dir := c.serverDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("server: create data dir: %w", err)
	}
	advertise := c.AdvertiseAddress
	if advertise == nil {
		advertise = hostip.Detect()
	}
	bundle, err := pki.Ensure(filepath.Join(dir, "tls"), servingNames(c, advertise))
	if err != nil {
		return err
	}
	token, err := ensureToken(dir, c.Token)
	if err != nil {
		return err
	}
	if err := writeNodeToken(dir, bundle, token); err != nil {
		return err
	}

	be, err := bolt.Open(bolt.Config{Path: filepath.Join(dir, "db", "state.db"), Logger: log.With("component", "storage")})
	if err != nil {
		return err
	}
	defer be.Close()

	sock := filepath.Join(dir, "db", "etcd.sock")
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20),
		// The API server's etcd client pings every 30 s; gRPC's default
		// policy (5 min) would answer with GOAWAY too_many_pings and drop
		// its watches. Allow what etcd allows.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	etcd := etcdapi.New(be)
	etcd.Register(g)
	go func() {
		if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("etcd API server stopped", "err", err)
		}
	}()
	defer g.Stop()

	kubeletCert, kubeletKey, err := bundle.EnsureClient("kube-apiserver-kubelet-client", pkix.Name{CommonName: apiserver.KubeletClientUser})
	if err != nil {
		return err
	}
	var loopbackAdmin atomic.Pointer[kubernetes.Clientset]
	joinHandler := join.Handler(join.Config{
		CACertFile: bundle.CACert,
		Secret:     token,
		Signer:     bundle,
		Client: func() kubernetes.Interface {
			if c := loopbackAdmin.Load(); c != nil {
				return c
			}
			return nil
		},
		Logger: log.With("component", "join"),
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	apiErr := make(chan error, 1)
	apiInformers := make(chan informers.SharedInformerFactory, 1)
	go func() {
		apiErr <- apiserver.Run(ctx, apiserver.Config{
			StateDir:          filepath.Join(dir, "apiserver"),
			BindAddress:       c.BindAddress,
			AdvertiseAddress:  advertise,
			Port:              c.HTTPSPort,
			EtcdEndpoint:      "unix://" + sock,
			NewEtcdClient:     func() *clientv3.Client { return etcd.Client(ctx) },
			CACert:            bundle.CACert,
			ServingCert:       bundle.ServingCert,
			ServingKey:        bundle.ServingKey,
			SAKey:             bundle.SAKey,
			SAPub:             bundle.SAPub,
			KubeletClientCert: kubeletCert,
			KubeletClientKey:  kubeletKey,
			Join:              joinHandler,
			JoinPaths:         join.Handles,
			MetricsClient: func() kubernetes.Interface {
				if c := loopbackAdmin.Load(); c != nil {
					return c
				}
				return nil
			},
			ServiceCIDR:   c.ServiceCIDR,
			NodePortRange: c.NodePortRange,
			ExtraArgs:     append(tolerationArgs(c.DefaultTolerationSeconds), c.APIServerArgs...),
			Informers:     func(f informers.SharedInformerFactory) { apiInformers <- f },
			Serving:       gc.Serving,
			CRDChanged:    gc.Settle,
			Logger:        log,
		})
	}()

	local := fmt.Sprintf("https://127.0.0.1:%d", c.HTTPSPort)
	admin := adminConfig(bundle, local)
	rc, err := clientcmd.NewDefaultClientConfig(*admin, nil).ClientConfig()
	if err != nil {
		return err
	}
	if err := waitReady(ctx, rc, apiErr); err != nil {
		return err
	}
	gc.Ready(ctx, func() uint64 { return uint64(be.CurrentRevision()) })
	adminClient, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return stopAPI(cancel, apiErr, err)
	}
	loopbackAdmin.Store(adminClient)
	if c.ControlPlaneNode != "" {
		go labelControlPlane(ctx, log, adminClient, c.ControlPlaneNode)
	}
	go memtrim.Loop(ctx, memTrim(log, c.AfterMemTrim))
	log.Info("API server ready", "port", c.HTTPSPort, "elapsed", time.Since(start).Round(time.Millisecond))
	if c.WriteKubeconfig != "" {
		if err := writeKubeconfig(c.WriteKubeconfig, c.WriteKubeconfigMod, admin); err != nil {
			return err
		}
		log.Info("wrote kubeconfig", "path", c.WriteKubeconfig)
	}
	// One server opens the database: the control loops' leases can only
	// be held by this server's earlier incarnation, which may have died
	// without releasing them (power loss).
	if err := leader.ReleaseAbandoned(ctx, adminClient, leaseControllerManager, leaseLocalPath, leaseScheduler); err != nil {
		return stopAPI(cancel, apiErr, err)
	}
	built := make(chan struct{})
	// The API server hands over its informer factory before it serves.
	var shared informers.SharedInformerFactory
	select {
	case shared = <-apiInformers:
	default:
		return stopAPI(cancel, apiErr, errors.New("server: the API server is ready but gave no informer factory"))
	}
	ctrlErr, err := startControlLoops(ctx, c, bundle, local, shared, func() { close(built) })
	if err != nil {
		return stopAPI(cancel, apiErr, err)
	}
	if c.Ready != nil {
		close(c.Ready)
	}
	if c.VolumeControllersStarted != nil {
		go func() {
			if !c.DisableControllerManager {
				waitVolumeControllers(ctx, log, built)
			}
			close(c.VolumeControllersStarted)
		}()
	}
	select {
	case err := <-apiErr:
		return err
	case err := <-ctrlErr:
		return stopAPI(cancel, apiErr, err)
	case <-ctx.Done():
		return stopAPI(cancel, apiErr, nil)
	}
}

// stopAPI stops a running API server and lets it drain before the
// storage behind it goes away (Run's deferred closes), then returns err.
func stopAPI(cancel context.CancelFunc, apiErr <-chan error, err error) error {
	cancel()
	select {
	case <-apiErr:
	case <-time.After(shutdownTimeout):
	}
	return err
}

// shutdownTimeout bounds how long a stopping server waits for the API
// server to finish in-flight requests.
const shutdownTimeout = 15 * time.Second

func tolerationArgs(seconds int) []string {
	if seconds <= 0 {
		return nil
	}
	v := strconv.Itoa(seconds)
	return []string{"--default-not-ready-toleration-seconds=" + v, "--default-unreachable-toleration-seconds=" + v}
}

// startControlLoops starts the controller manager and the scheduler, each
// as an API client with its own certificate identity. The returned channel
// reports the first of them to fail.
//
// built is called once the controller manager's controllers are all
// constructed (waitVolumeControllers).
func startControlLoops(ctx context.Context, c Config, b *pki.Bundle, server string, apiInformers informers.SharedInformerFactory, built func()) (<-chan error, error) {
	errc := make(chan error, 2)
	credDir := filepath.Join(c.serverDir(), "cred")
	if err := os.MkdirAll(credDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	kubeconfig := func(name, cn string) (string, error) {
		cert, key, err := b.EnsureClient(name, pkix.Name{CommonName: cn})
		if err != nil {
			return "", err
		}
		cfg := clientConfig(b.CACert, cert, key, server)
		// Loopback: no gzip, as upstream's scheduler and controller
		// manager set for their own clients. Every client of these
		// files (the shared informers too) would otherwise hold a gzip
		// reader per watch-list stream for its life (~40 KB each) and
		// have the server compress its lists and initial events.
		cfg.Clusters["default"].DisableCompression = true
		path := filepath.Join(credDir, name+".kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			return "", fmt.Errorf("server: write %s: %w", path, err)
		}
		return path, nil
	}
	// The API server's informer factory also serves the controller manager
	// and the scheduler (informerpool); without a controller manager the
	// scheduler makes its own.
	var pool *informerpool.Pool
	if !c.DisableControllerManager {
		kc, err := kubeconfig("controller", "system:kube-controller-manager")
		if err != nil {
			return nil, err
		}
		pool = informerpool.New(ctx, apiInformers)
		go func() {
			errc <- leader.Run(ctx, kc, leaseControllerManager, leader.Default, func(ctx context.Context) error {
				return controllers.Run(ctx, controllers.Config{
					Kubeconfig:             kc,
					CACert:                 b.CACert,
					CAKey:                  b.CAKey,
					SAKey:                  b.SAKey,
					ClusterCIDR:            c.ClusterCIDR,
					NodeCIDRMaskSize:       24,
					ServiceCIDR:            c.ServiceCIDR,
					NodeMonitorGracePeriod: c.NodeMonitorGracePeriod,
					NodeMonitorPeriod:      nodeMonitorPeriod,
					QPS:                    controllerManagerQPS,
					Burst:                  2 * controllerManagerQPS,
					ExtraArgs:              c.ControllerManagerArgs,
					Informers:              pool.ControllerManager(built),
				})
			})
		}()
	}
	if !c.DisableControllerManager {
		kc, err := kubeconfig("local-path", localpath.Identity)
		if err != nil {
			return nil, err
		}
		rc, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			return nil, err
		}
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, err
		}
		go func() {
			errc <- leader.Run(ctx, kc, leaseLocalPath, leader.Default, func(ctx context.Context) error {
				return localpath.Run(ctx, localpath.Config{Client: client, HelperImage: HelperImage, Logger: c.Logger.With("component", "local-path")})
			})
		}()
	}
	if !c.DisableScheduler {
		kc, err := kubeconfig("scheduler", "system:kube-scheduler")
		if err != nil {
			return nil, err
		}
		var shared informers.SharedInformerFactory
		if pool != nil {
			shared = pool.Scheduler()
		}
		go func() {
			errc <- leader.Run(ctx, kc, leaseScheduler, leader.Default, func(ctx context.Context) error {
				return scheduler.Run(ctx, scheduler.Config{
					Informers:  shared,
					StateDir:   filepath.Join(c.serverDir(), "scheduler"),
					Kubeconfig: kc,
					QPS:        controlLoopQPS,
					Burst:      2 * controlLoopQPS,
					ExtraArgs:  c.SchedulerArgs,
				})
			})
		}()
	}
	return errc, nil
}

// The leases (kube-system) the in-process control loops run under.
const (
	leaseControllerManager = "kube-controller-manager"
	leaseLocalPath         = "skiff-local-path-provisioner"
	leaseScheduler         = "kube-scheduler"
)

const (
	// controlLoopQPS is the scheduler's client rate limit: its connection
	// is loopback, so upstream's 50 QPS (sized for a remote, shared API
	// server) would cap binding far below what it can do.
	controlLoopQPS = 1000
	// controllerManagerQPS is the controllers' client rate limit (each
	// controller has its own), as upstream's 5000-node scale tests run
	// kube-controller-manager (--kube-api-qps=100; its default is 20). At
	// 1000, ReplicaSets creating 30,000 pods did so as fast as 2 cores
	// allowed (~330 creates/s, far ahead of the ~90 pods/s the scheduler
	// and kubelets got Running), and the CPU they took pushed the kubelets'
	// pod status updates past the API latency SLO (server-side p99 over
	// 5 minutes 1.2-1.4 s against 1 s); at 100 it was 0.24 s, with all
	// pods Running as soon and less server CPU.
	controllerManagerQPS = 100
	// nodeMonitorPeriod is how often node health is checked (upstream 5 s);
	// a short period keeps node-loss detection within its grace period.
	nodeMonitorPeriod = 2 * time.Second
)

func servingNames(c Config, advertise net.IP) pki.Serving {
	s := pki.Serving{
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		s.DNSNames = append(s.DNSNames, h)
	}
	if advertise != nil {
		s.IPs = append(s.IPs, advertise)
	}
	if ip := firstServiceIP(c.ServiceCIDR); ip != nil {
		s.IPs = append(s.IPs, ip)
	}
	for _, san := range c.TLSSANs {
		if ip := net.ParseIP(san); ip != nil {
			s.IPs = append(s.IPs, ip)
		} else if san != "" {
			s.DNSNames = append(s.DNSNames, san)
		}
	}
	return s
}

func firstServiceIP(cidr string) net.IP {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil
	}
	ip := append(net.IP(nil), n.IP...)
	ip[len(ip)-1]++
	return ip
}

func ensureToken(dir, given string) (string, error) {
	path := filepath.Join(dir, "token")
	if given != "" {
		return given, os.WriteFile(path, []byte(given+"\n"), 0o600)
	}
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server: write token: %w", err)
	}
	return tok, nil
}

// writeNodeToken writes the join token in the k3s format, pinning the CA:
// K10<sha256 of the CA bundle>::server:<secret>.
func writeNodeToken(dir string, b *pki.Bundle, secret string) error {
	hash, err := b.CAHash()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "node-token"), []byte("K10"+hash+"::server:"+secret+"\n"), 0o600)
}

func adminConfig(b *pki.Bundle, server string) *clientcmdapi.Config {
	return clientConfig(b.CACert, b.AdminCert, b.AdminKey, server)
}

func clientConfig(ca, cert, key, server string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos["default"] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	return cfg
}

// writeKubeconfig writes cfg with its certificate files embedded, so the
// file is usable on its own.
func writeKubeconfig(path string, mode os.FileMode, admin *clientcmdapi.Config) error {
	cfg := admin.DeepCopy()
	for _, c := range cfg.Clusters {
		data, err := os.ReadFile(c.CertificateAuthority)
		if err != nil {
			return err
		}
		c.CertificateAuthority, c.CertificateAuthorityData = "", data
	}
	for _, a := range cfg.AuthInfos {
		cert, err := os.ReadFile(a.ClientCertificate)
		if err != nil {
			return err
		}
		key, err := os.ReadFile(a.ClientKey)
		if err != nil {
			return err
		}
		a.ClientCertificate, a.ClientCertificateData = "", cert
		a.ClientKey, a.ClientKeyData = "", key
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if mode == 0 {
		mode = 0o600
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("server: kubeconfig dir: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("server: write kubeconfig: %w", err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func waitReady(ctx context.Context, admin *rest.Config, apiErr <-chan error) error {
	rc := rest.CopyConfig(admin)
	rc.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-apiErr:
			if err == nil {
				err = errors.New("API server exited")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if err == nil && string(body) == "ok" {
				return nil
			}
		}
	}
}

// HelperImage runs Skiff's helper pods (volume clean-up); every agent
// imports it at start.
const HelperImage = "skiff.local/demo:v1"

// ControlPlaneLabel marks the nodes that run a Skiff server.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// labelControlPlane labels the server's own node once it registers (the
// node itself may not set node-role labels: NodeRestriction).
func labelControlPlane(ctx context.Context, log *slog.Logger, client kubernetes.Interface, node string) {
	patch := []byte(`{"metadata":{"labels":{"` + ControlPlaneLabel + `":"true"}}}`)
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if n.Labels[ControlPlaneLabel] == "true" {
			return true, nil
		}
		_, err = client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err == nil, nil
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("cannot label the control-plane node", "node", node, "err", err)
	}
}

// waitVolumeControllers waits until the controller manager has built all
// its controllers, among them the volume controllers (attach/detach,
// expand, persistent volume binder), each of which initializes the CSI
// volume plugin. Upstream's CSI plugin keeps its node-info manager in a
// package variable that every initialization replaces, and the
// controllers' has no node name: a kubelet in the same process must
// initialize its plugins after them, or its CSINode never initializes
// (and the kubelet exits after ~140 s). built is closed when the
// controllers start (the first Start of the controller manager's
// informerpool factory): the exact point, on a first start as on a
// restart.
func waitVolumeControllers(ctx context.Context, log *slog.Logger, built <-chan struct{}) {
	select {
	case <-built:
	case <-ctx.Done():
	case <-time.After(volumeControllersTimeout):
		log.Warn("the controller manager has not started its controllers; starting the node's kubelet anyway", "waited", volumeControllersTimeout)
	}
}

// volumeControllersTimeout bounds waitVolumeControllers.
const volumeControllersTimeout = 60 * time.Second
