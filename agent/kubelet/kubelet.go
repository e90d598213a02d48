// Package kubelet runs upstream's kubelet (k8s.io/kubernetes/cmd/kubelet/
// app) in the agent's process, configured for Skiff: the container
// runtime is Skiff's own containerd over CRI, state lives under the data
// directory, authentication and authorization go through the API server
// (x509 client certificates from the cluster CA, webhook token review and
// SubjectAccessReview), and the node's identity is the certificate the
// agent obtained when it joined.
//
// Upstream's kubelet is the specification for pod semantics (sandboxes,
// init containers, probes, restart back-off, volumes, QoS cgroups,
// eviction, streaming), so Skiff runs it rather than re-implementing it;
// what Skiff owns is the configuration.
package kubelet

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletscheme "k8s.io/kubernetes/pkg/kubelet/apis/config/scheme"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/utils/ptr"
)

// Config is what the agent decides for its kubelet.
type Config struct {
	NodeName string
	NodeIP   string
	// RootDir holds pods' volumes and the kubelet's state; PodLogsDir the
	// container logs.
	RootDir, PodLogsDir string
	// Kubeconfig is the node's client identity (system:node:<name>).
	Kubeconfig string
	// ClientCA verifies clients of the kubelet's HTTPS endpoint (the API
	// server); ServingCert/Key is the endpoint's certificate.
	ClientCA, ServingCert, ServingKey string
	// RuntimeEndpoint is the CRI socket (unix://...).
	RuntimeEndpoint string
	// CgroupRoot parents the pods' cgroups (kubepods), so a host's own
	// containers are not disturbed.
	CgroupRoot string
	// ResolvConf is the DNS configuration pods with dnsPolicy Default get.
	ResolvConf    string
	ClusterDNS    []string
	ClusterDomain string
	// Labels and Taints are registered with the node.
	Labels map[string]string
	Taints []string
	// Port of the kubelet HTTPS endpoint (10250).
	Port int
	// ExtraArgs are kubelet flags (--name=value) Skiff does not model.
	ExtraArgs []string
}

// configuration is the KubeletConfiguration Skiff runs with.
func (c Config) configuration() *kubeletv1beta1.KubeletConfiguration {
	return &kubeletv1beta1.KubeletConfiguration{
		Address:                  "0.0.0.0",
		Port:                     int32(c.Port),
		ReadOnlyPort:             0,
		TLSCertFile:              c.ServingCert,
		TLSPrivateKeyFile:        c.ServingKey,
		ContainerRuntimeEndpoint: c.RuntimeEndpoint,
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: c.ClientCA},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		CgroupRoot:    c.CgroupRoot,
		// Pod logs and state stay under the data directory.
		PodLogsDir:         c.PodLogsDir,
		ResolverConfig:     ptr.To(c.ResolvConf),
		ClusterDNS:         c.ClusterDNS,
		ClusterDomain:      c.ClusterDomain,
		RegisterWithTaints: nil,
		// Edge boxes and laptops often have swap on.
		FailSwapOn: ptr.To(false),
		// Kernel tunables are the host's: never rewrite them.
		ProtectKernelDefaults: false,
		FailCgroupV1:          ptr.To(false),
		// Small clusters: report node status and leases on upstream's
		// cadence, react to pod changes quickly.
		NodeStatusReportFrequency: metav1.Duration{Duration: time.Minute},
		NodeLeaseDurationSeconds:  40,
		SyncFrequency:             metav1.Duration{Duration: 10 * time.Second},
		FileCheckFrequency:        metav1.Duration{Duration: 20 * time.Second},
		SerializeImagePulls:       ptr.To(false),
		MaxPods:                   110,
		// The agent's own process tree is not the kubelet's to manage.
		CgroupsPerQOS:          ptr.To(true),
		EnforceNodeAllocatable: []string{"pods"},
		StaticPodPath:          "",
		// The API server checks node health through leases, not this port.
		HealthzPort: ptr.To[int32](0),
	}
}

// Run runs the kubelet until ctx ends. It does not return on success
// before that; the kubelet's goroutines do not all stop with ctx, so the
// agent's process ends with it.
func Run(ctx context.Context, c Config) error {
	scheme, _, err := kubeletscheme.NewSchemeAndCodecs()
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	versioned := c.configuration()
	scheme.Default(versioned)
	kc := &kubeletconfig.KubeletConfiguration{}
	if err := scheme.Convert(versioned, kc, nil); err != nil {
		return fmt.Errorf("kubelet: convert configuration: %w", err)
	}
	flags := options.NewKubeletFlags()
	flags.KubeConfig = c.Kubeconfig
	flags.HostnameOverride = c.NodeName
	flags.NodeIP = c.NodeIP
	flags.RootDirectory = c.RootDir
	flags.CertDirectory = c.RootDir + "/pki"
	for k, v := range c.Labels {
		flags.NodeLabels[k] = v
	}
	if len(c.ExtraArgs) > 0 {
		fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
		flags.AddFlags(fs)
		options.AddKubeletConfigFlags(fs, kc)
		if err := fs.Parse(c.ExtraArgs); err != nil {
			return fmt.Errorf("kubelet: --kubelet-arg: %w", err)
		}
	}
	if len(c.Taints) > 0 {
		fs := pflag.NewFlagSet("kubelet-taints", pflag.ContinueOnError)
		options.AddKubeletConfigFlags(fs, kc)
		for _, t := range c.Taints {
			if err := fs.Set("register-with-taints", t); err != nil {
				return fmt.Errorf("kubelet: taint %q: %w", t, err)
			}
		}
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
		return fmt.Errorf("kubelet: feature gates: %w", err)
	}
	if err := options.ValidateKubeletFlags(flags); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return fmt.Errorf("kubelet: configuration: %w", err)
	}
	s := &options.KubeletServer{KubeletFlags: *flags, KubeletConfiguration: *kc}
	deps, err := app.UnsecuredDependencies(ctx, s, utilfeature.DefaultFeatureGate)
	if err != nil {
		return fmt.Errorf("kubelet: dependencies: %w", err)
	}
	if err := app.Run(ctx, s, deps, utilfeature.DefaultFeatureGate); err != nil && ctx.Err() == nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return nil
}
