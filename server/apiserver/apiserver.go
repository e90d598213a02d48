// Package apiserver runs the Kubernetes API: the upstream kube-apiserver
// (k8s.io/kubernetes/cmd/kube-apiserver/app, with the apiextensions and
// aggregator servers chained as upstream does) configured in-process from a
// Config, with Skiff's storage behind the etcd v3 API.
//
// Reusing the upstream server chain, rather than re-implementing it, is what
// makes every API detail the real clients depend on (encodings, discovery,
// OpenAPI, watch semantics, per-type defaulting and validation, admission,
// RBAC, CRDs, server-side apply, ServiceAccount tokens) exactly upstream's.
package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"

	"github.com/skiff-sh/skiff/internal/intern"
	"github.com/skiff-sh/skiff/server/apiserver/authncache"
	"github.com/skiff-sh/skiff/server/apiserver/handoff"
	"github.com/skiff-sh/skiff/server/apiserver/storefactory"
)

// Config is everything the API server needs; cmd/ fills it from flags.
type Config struct {
	// StateDir holds files the API server writes (authentication config).
	StateDir         string
	BindAddress      net.IP
	AdvertiseAddress net.IP
	Port             int
	// EtcdEndpoint is the etcd API endpoint of the storage (unix://...).
	EtcdEndpoint string
	// NewEtcdClient, when set, returns a new in-process client of the
	// same storage: the registries' stores use these
	// (server/apiserver/storefactory), and so do the storage health
	// checks and upstream's few raw stores, through upstream's storage
	// factory (storagebackend.TransportConfig.NewClient, a Skiff patch);
	// nothing in the process then dials EtcdEndpoint.
	NewEtcdClient func() *clientv3.Client

	CACert                  string
	ServingCert, ServingKey string
	SAKey, SAPub            string

	// KubeletClientCert/Key is the API server's identity towards kubelets
	// (logs, exec, port-forward, metrics); kubelets' serving certificates
	// are verified with CACert.
	KubeletClientCert, KubeletClientKey string

	// Join serves the node-join endpoints (server/join) on the API port,
	// in front of authentication; JoinPaths selects its requests.
	Join      http.Handler
	JoinPaths func(path string) bool

	// MetricsClient reaches the API as the metrics API's scraper (nil
	// until ready).
	MetricsClient func() kubernetes.Interface

	ServiceCIDR   string
	NodePortRange string
	// ExtraArgs are appended kube-apiserver flags (--name=value), for
	// settings Skiff does not model.
	ExtraArgs []string
	// Informers, when set, is given the API server's own shared informer
	// factory (the loopback informers of its admission, authorization and
	// authentication; objects kept without managedFields) before the
	// server starts serving, so components in the same process can share
	// its informers instead of keeping a second copy of every object.
	Informers func(informers.SharedInformerFactory)
	// Serving, when set, is called once the server is built and starts
	// serving: what follows until ready is its post-start hooks and the
	// initial lists of its watch caches and informers.
	Serving func()
	// CRDChanged, when set, is called when a CustomResourceDefinition is
	// added or its spec changes after start: the server builds that
	// resource's serving state (discovery, schemas and validators, storage
	// and watch cache, on its first request), long-lived like start-up's.
	CRDChanged func()
	// Logger receives the upstream components' klog output.
	Logger *slog.Logger
}

// certCacheTTL is how long a verified client certificate chain is taken
// at its word (server/apiserver/authncache).
const certCacheTTL = 10 * time.Second

// anonymousPaths are the only paths an unauthenticated client may reach.
var anonymousPaths = []string{"/healthz", "/livez", "/readyz", "/version"}

// defaultFeatureGates are where Skiff's API server departs from upstream's
// feature gate defaults; feature-gates given in ExtraArgs come after and
// win.
const defaultFeatureGates = "ConcurrentWatchObjectDecode=false"

func (c *Config) args() ([]string, error) {
	authnConfig := filepath.Join(c.StateDir, "authentication-config.yaml")
	var b strings.Builder
	b.WriteString("apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\nanonymous:\n  enabled: true\n  conditions:\n")
	for _, p := range anonymousPaths {
		fmt.Fprintf(&b, "  - path: %s\n", p)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(authnConfig, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("apiserver: write authentication config: %w", err)
	}
	args := []string{
		"--etcd-servers=" + c.EtcdEndpoint,
		"--storage-backend=etcd3",
		"--bind-address=" + c.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(c.Port),
		"--tls-cert-file=" + c.ServingCert,
		"--tls-private-key-file=" + c.ServingKey,
		"--client-ca-file=" + c.CACert,
		"--authentication-config=" + authnConfig,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + c.SAPub,
		"--service-account-signing-key-file=" + c.SAKey,
		"--api-audiences=https://kubernetes.default.svc,skiff",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--enable-admission-plugins=NodeRestriction",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--allow-privileged=true",
		"--cert-dir=" + filepath.Join(c.StateDir, "generated-certs"),
		// Each resource's watch decodes its events in one goroutine, not
		// in a goroutine per event (upstream's 1.37 default): on 2 cores
		// the concurrent decode bought no throughput, and its goroutines,
		// each growing a new stack, cost ~8% of the server's CPU per
		// create. --kube-apiserver-arg=feature-gates=... overrides it.
		"--feature-gates=" + defaultFeatureGates,
	}
	if c.KubeletClientCert != "" {
		args = append(args,
			"--kubelet-client-certificate="+c.KubeletClientCert,
			"--kubelet-client-key="+c.KubeletClientKey,
			"--kubelet-certificate-authority="+c.CACert,
			"--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP")
	}
	if c.AdvertiseAddress != nil {
		args = append(args, "--advertise-address="+c.AdvertiseAddress.String())
	}
	if c.NodePortRange != "" {
		args = append(args, "--service-node-port-range="+c.NodePortRange)
	}
	return append(args, c.ExtraArgs...), nil
}

// withJoin serves the join endpoints (c.JoinPaths) with c.Join in front of
// chain; chain itself when there is no join handler.
func (c Config) withJoin(chain http.Handler) http.Handler {
	if c.Join == nil {
		return chain
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.JoinPaths(r.URL.Path) {
			c.Join.ServeHTTP(w, r)
			return
		}
		chain.ServeHTTP(w, r)
	})
}

// Run starts the API server and blocks until ctx ends or it fails.
func Run(ctx context.Context, c Config) error {
	phase := startPhases(c.Logger)
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args, err := c.args()
	if err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("apiserver: feature gates: %w", err)
	}
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return fmt.Errorf("apiserver: logging: %w", err)
	}
	if c.Logger != nil {
		// Route klog (every upstream component in the process) to slog.
		klog.SetSlogLogger(c.Logger)
	}
	// The loopback clients should not log the server's own warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("apiserver: complete options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("apiserver: %w", utilerrors.NewAggregate(errs))
	}
	// As kube-apiserver: kubernetes_feature_enabled and the component
	// version metrics.
	if g, ok := featureGate.(featuregate.MutableFeatureGate); ok {
		g.AddMetrics()
	}
	s.GenericServerRunOptions.ComponentGlobalsRegistry.AddMetrics()
	if completed.InformerName == nil {
		if completed.InformerName, err = cache.NewInformerName("kube-apiserver"); err != nil {
			return fmt.Errorf("apiserver: %w", err)
		}
	}
	// One table for the watch caches and the informers: their objects
	// share one copy of the values they repeat (internal/intern).
	objects := intern.New(0)
	var stores *storefactory.Factory
	if c.NewEtcdClient != nil {
		completed.Etcd.StorageConfig.Transport.NewClient = func() (*clientv3.Client, error) { return c.NewEtcdClient(), nil }
		var stop func()
		stores, stop = storefactory.New(c.NewEtcdClient, completed.Etcd.StorageConfig.CompactionInterval, objects)
		defer stop()
		// The loopback informers of pods and nodes read the watch cache
		// in-process (cachelw); they must be made before admission
		// takes its informers from the factory.
		completed.VersionedInformersCreated = func(f informers.SharedInformerFactory) {
			cacheInformers(f, stores, objects)
		}
	}
	// app.Run, unrolled so Skiff can swap the slow bootstrap hooks.
	phase("options")
	config, err := app.NewConfig(completed)
	if err != nil {
		return fmt.Errorf("apiserver: config: %w", err)
	}
	config.KubeAPIs.ControlPlane.Generic.DisabledPostStartHooks.Insert(replacedHooks...)
	if c.Informers != nil {
		c.Informers(config.KubeAPIs.ControlPlane.VersionedInformers)
	}
	// createServerChain installs the kube-apiserver's and the apiextensions
	// server's OpenAPI itself (built on demand).
	config.KubeAPIs.ControlPlane.Generic.SkipOpenAPIInstallation = true
	config.ApiExtensions.GenericConfig.SkipOpenAPIInstallation = true
	kubeGeneric, extGeneric, aggGeneric := config.KubeAPIs.ControlPlane.Generic, config.ApiExtensions.GenericConfig, config.Aggregator.GenericConfig
	operationIDsFromRoutes(
		[]*openapicommon.Config{kubeGeneric.OpenAPIConfig, extGeneric.OpenAPIConfig, aggGeneric.OpenAPIConfig},
		[]*openapicommon.OpenAPIV3Config{kubeGeneric.OpenAPIV3Config, extGeneric.OpenAPIV3Config, aggGeneric.OpenAPIV3Config})
	if stores != nil {
		kube := config.KubeAPIs.ControlPlane.Generic
		kube.RESTOptionsGetter = stores.Getter(kube.RESTOptionsGetter)
		ext := config.ApiExtensions
		ext.GenericConfig.RESTOptionsGetter = stores.Getter(ext.GenericConfig.RESTOptionsGetter)
		ext.ExtraConfig.CRDRESTOptionsGetter = stores.Getter(ext.ExtraConfig.CRDRESTOptionsGetter)
		agg := config.Aggregator.GenericConfig
		agg.RESTOptionsGetter = stores.Getter(agg.RESTOptionsGetter)
	}
	// The outermost server (the aggregator) authenticates every request.
	// Front-proxy authentication depends on headers, not only on the
	// certificate: no cache then.
	if authn := &config.Aggregator.GenericConfig.Authentication; authn.Authenticator != nil &&
		(completed.Authentication.RequestHeader == nil || completed.Authentication.RequestHeader.ClientCAFile == "") {
		authn.Authenticator = authncache.New(authn.Authenticator, certCacheTTL)
	}
	// The outermost server (the aggregator) serves every request: its
	// chain runs HTTP/2 writes on pooled goroutines (handoff) and gets the
	// join endpoints, if any, in front of authentication.
	agg := config.Aggregator.GenericConfig
	build := agg.BuildHandlerChainFunc
	agg.BuildHandlerChainFunc = func(h http.Handler, gc *genericapiserver.Config) http.Handler {
		return handoff.Wrap(c.withJoin(build(h, gc)))
	}
	phase("config")
	cc, err := config.Complete()
	if err != nil {
		return fmt.Errorf("apiserver: complete config: %w", err)
	}
	chain, err := createServerChain(cc, c.MetricsClient, c.CRDChanged)
	if err != nil {
		return fmt.Errorf("apiserver: create server chain: %w", err)
	}
	if err := addBootstrapHooks(chain.GenericAPIServer); err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	phase("install APIs")
	prepared, err := chain.PrepareRun()
	if err != nil {
		return fmt.Errorf("apiserver: prepare: %w", err)
	}
	releaseOpenAPIDefinitions(config.KubeAPIs.ControlPlane.Generic.OpenAPIV3Config)
	phase("prepare (OpenAPI)")
	if c.Serving != nil {
		c.Serving()
	}
	return prepared.Run(ctx)
}

// startPhases returns a function that logs, at debug level, how long each
// start-up phase took since the previous call.
func startPhases(log *slog.Logger) func(name string) {
	if log == nil {
		log = slog.Default()
	}
	last := time.Now()
	return func(name string) {
		now := time.Now()
		log.Debug("API server start-up phase done", "phase", name, "took", now.Sub(last).Round(time.Millisecond))
		last = now
	}
}

// releaseOpenAPIDefinitions drops the generated OpenAPI definitions (~8 MB)
// that upstream's DefaultOpenAPIV3Config computes up front and keeps for
// the life of the server. They are read while API groups are installed
// (server-side apply's type converters); the OpenAPI v3 documents, built
// on demand (installOpenAPI), make the builder call GetDefinitions again,
// as it does when Definitions is unset (~50 ms more on the first request
// of a group-version; builds that overlap share one result, see
// sharedDefinitions).
func releaseOpenAPIDefinitions(c *openapicommon.OpenAPIV3Config) {
	if c != nil && c.GetDefinitions != nil {
		c.Definitions = nil
	}
}
