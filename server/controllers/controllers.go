// Package controllers runs the control loops of the Skiff server. They are
// API clients like any operator (they never touch storage), started from
// this one place and stopped by cancelling the context.
//
// The namespace controller, garbage collector, ServiceAccount controller
// and root CA publisher are upstream's (k8s.io/kubernetes/pkg/controller/...):
// namespace deletion, Background/Foreground/Orphan cascading, the `default`
// ServiceAccount and the `kube-root-ca.crt` ConfigMap in every namespace
// must behave exactly as upstream.
package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	cacheddiscovery "k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/controller-manager/pkg/informerfactory"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/controller/certificates/rootcacertpublisher"
	"k8s.io/kubernetes/pkg/controller/garbagecollector"
	namespacecontroller "k8s.io/kubernetes/pkg/controller/namespace"
	serviceaccountcontroller "k8s.io/kubernetes/pkg/controller/serviceaccount"
)

// Config configures the controllers.
type Config struct {
	// Client is the API the controllers talk to (the server's admin identity).
	Client *rest.Config
	Logger *slog.Logger
	// RootCA is the PEM bundle published as kube-root-ca.crt.
	RootCA []byte
	// ResyncPeriod for shared informers (default 12h, as upstream).
	ResyncPeriod time.Duration
}

// rootCAConfigMap is the ConfigMap the root CA publisher maintains.
const rootCAConfigMap = "kube-root-ca.crt"

// Run starts every controller and blocks until ctx ends.
func Run(ctx context.Context, c Config) error {
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = 12 * time.Hour
	}
	cfg := rest.CopyConfig(c.Client)
	cfg.QPS, cfg.Burst = 200, 400
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controllers: %w", err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controllers: %w", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("controllers: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cacheddiscovery.NewMemCacheClient(disco))
	go wait.UntilWithContext(ctx, func(context.Context) { mapper.Reset() }, 30*time.Second)

	shared := informers.NewSharedInformerFactory(client, c.ResyncPeriod)
	mdInformers := metadatainformer.NewSharedInformerFactory(md, c.ResyncPeriod)
	started := make(chan struct{})

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context)) {
		wg.Go(func() {
			c.Logger.Info("starting controller", "controller", name)
			f(ctx)
		})
	}

	ns := namespacecontroller.NewNamespaceController(ctx, client, md,
		client.Discovery().ServerPreferredNamespacedResources,
		shared.Core().V1().Namespaces(), 5*time.Minute, v1.FinalizerKubernetes)
	run("namespace", func(ctx context.Context) { ns.Run(ctx, 5) })

	sa, err := serviceaccountcontroller.NewServiceAccountsController(klog.FromContext(ctx),
		shared.Core().V1().ServiceAccounts(), shared.Core().V1().Namespaces(), client,
		serviceaccountcontroller.DefaultServiceAccountsControllerOptions())
	if err != nil {
		return fmt.Errorf("controllers: serviceaccount: %w", err)
	}
	run("serviceaccount", func(ctx context.Context) { sa.Run(ctx, 1) })

	// The publisher only cares about kube-root-ca.crt: watch just those
	// ConfigMaps rather than decoding every ConfigMap write in the cluster.
	caMaps := informers.NewSharedInformerFactoryWithOptions(client, c.ResyncPeriod, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", rootCAConfigMap).String()
	}))
	pub, err := rootcacertpublisher.NewPublisher(caMaps.Core().V1().ConfigMaps(), shared.Core().V1().Namespaces(), client, c.RootCA)
	if err != nil {
		return fmt.Errorf("controllers: root CA publisher: %w", err)
	}
	run("root-ca-cert-publisher", func(ctx context.Context) { pub.Run(ctx, 1) })

	gc, err := newGarbageCollector(ctx, client, md, mapper, informerfactory.NewInformerFactory(shared, mdInformers), started)
	if err != nil {
		return err
	}
	run("garbage-collector", func(ctx context.Context) {
		const syncPeriod = 30 * time.Second
		var inner sync.WaitGroup
		inner.Go(func() { gc.Run(ctx, 20, syncPeriod) })
		inner.Go(func() { gc.Sync(ctx, disco, syncPeriod) })
		inner.Wait()
	})

	shared.Start(ctx.Done())
	caMaps.Start(ctx.Done())
	mdInformers.Start(ctx.Done())
	close(started)
	<-ctx.Done()
	shared.Shutdown()
	caMaps.Shutdown()
	mdInformers.Shutdown()
	wg.Wait()
	return nil
}

func newGarbageCollector(ctx context.Context, client kubernetes.Interface, md metadata.Interface, mapper meta.ResettableRESTMapper,
	factory informerfactory.InformerFactory, started <-chan struct{}) (*garbagecollector.GarbageCollector, error) {
	gb := garbagecollector.NewDependencyGraphBuilder(ctx, md, mapper, garbagecollector.DefaultIgnoredResources(), factory, started)
	gc, err := garbagecollector.NewComposedGarbageCollector(ctx, client, md, mapper, gb)
	if err != nil {
		return nil, fmt.Errorf("controllers: garbage collector: %w", err)
	}
	return gc, nil
}
