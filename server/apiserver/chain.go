package apiserver

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapifilters "k8s.io/apiserver/pkg/endpoints/filters"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/notfoundhandler"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	aggregatorapiserver "k8s.io/kube-aggregator/pkg/apiserver"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	controlplaneapiserver "k8s.io/kubernetes/pkg/controlplane/apiserver"

	"github.com/skiff-sh/skiff/server/metrics"
)

// createServerChain is upstream's app.CreateServerChain (apiextensions →
// kube-apiserver → aggregator) with two steps added: the resource metrics
// API (server/metrics) is installed into the kube-apiserver before the
// aggregator is built, so the aggregator auto-registers a local APIService
// for it and discovery lists it like any built-in group; and, when the
// configs skip upstream's OpenAPI installation, the kube-apiserver's and
// the apiextensions server's OpenAPI are installed with documents built on
// demand (installOpenAPI, installCRDOpenAPI). crdChanged, if not nil, is
// called for each CustomResourceDefinition added or changed (crdEvents).
func createServerChain(config app.CompletedConfig, metricsClient func() kubernetes.Interface, crdChanged func()) (*aggregatorapiserver.APIAggregator, error) {
	notFound := notfoundhandler.New(config.KubeAPIs.ControlPlane.Generic.Serializer, genericapifilters.NoMuxAndDiscoveryIncompleteKey)
	apiExtensions, err := config.ApiExtensions.New(genericapiserver.NewEmptyDelegateWithCustomHandler(notFound))
	if err != nil {
		return nil, err
	}
	if crdChanged != nil {
		crds := apiExtensions.Informers.Apiextensions().V1().CustomResourceDefinitions().Informer()
		if _, err := crds.AddEventHandler(crdEvents(crdChanged)); err != nil {
			return nil, err
		}
	}
	crdAPIEnabled := config.ApiExtensions.GenericConfig.MergedResourceConfig.ResourceEnabled(
		schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	kube, err := config.KubeAPIs.New(apiExtensions.GenericAPIServer)
	if err != nil {
		return nil, err
	}
	if err := metrics.Install(kube.ControlPlane.GenericAPIServer, metricsClient); err != nil {
		return nil, err
	}
	aggregator, err := controlplaneapiserver.CreateAggregatorServer(config.Aggregator, kube.ControlPlane.GenericAPIServer,
		apiExtensions.Informers.Apiextensions().V1().CustomResourceDefinitions(), crdAPIEnabled, apiServicePriorities())
	if err != nil {
		return nil, err
	}
	// The aggregator's v3 root takes a group-version two delegates list
	// from either: each built-in root path goes to one server only (the
	// aggregator, else the apiextensions server, else the kube-apiserver).
	// A CRD of a built-in group-version is listed twice, as upstream.
	aggPaths, extPaths := rootPaths(aggregator.GenericAPIServer), rootPaths(apiExtensions.GenericAPIServer)
	if g := config.ApiExtensions.GenericConfig; g.SkipOpenAPIInstallation {
		installCRDOpenAPI(apiExtensions.GenericAPIServer, g.OpenAPIConfig, g.OpenAPIV3Config,
			apiExtensions.Informers.Apiextensions().V1().CustomResourceDefinitions().Lister(), aggPaths, openAPIIdentity(g.OpenAPIV3Config))
	}
	if g := config.KubeAPIs.ControlPlane.Generic; g.SkipOpenAPIInstallation {
		shared := map[string]bool{}
		for p := range aggPaths {
			shared[p] = true
		}
		for p := range extPaths {
			shared[p] = true
		}
		installOpenAPI(kube.ControlPlane.GenericAPIServer, g.OpenAPIConfig, g.OpenAPIV3Config, shared, openAPIIdentity(g.OpenAPIV3Config))
	}
	return aggregator, nil
}

// crdEvents calls changed for a CustomResourceDefinition added after the
// informer's initial list or whose spec changed (its generation; status
// updates and resyncs do not count).
func crdEvents(changed func()) cache.ResourceEventHandlerDetailedFuncs {
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, isInInitialList bool) {
			if !isInInitialList {
				changed()
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*apiextensionsv1.CustomResourceDefinition)
			n, ok2 := newObj.(*apiextensionsv1.CustomResourceDefinition)
			if ok1 && ok2 && o.Generation != n.Generation {
				changed()
			}
		},
	}
}

// rootPaths returns the root paths of s's web services.
func rootPaths(s *genericapiserver.GenericAPIServer) map[string]bool {
	paths := map[string]bool{}
	for _, ws := range s.Handler.GoRestfulContainer.RegisteredWebServices() {
		paths[ws.RootPath()] = true
	}
	return paths
}

// apiServicePriorities orders the groups in discovery: upstream's generic
// table plus kube-apiserver's own (cmd/kube-apiserver/app/aggregator.go,
// unexported there) plus metrics.k8s.io as metrics-server registers it.
// A group missing here is not auto-registered, so keep it complete.
func apiServicePriorities() map[schema.GroupVersion]controlplaneapiserver.APIServicePriority {
	p := controlplaneapiserver.DefaultGenericAPIServicePriorities()
	type prio = controlplaneapiserver.APIServicePriority
	for gv, v := range map[schema.GroupVersion]prio{
		{Group: "", Version: "v1"}:                        {Group: 18000, Version: 1},
		{Group: "apps", Version: "v1"}:                    {Group: 17800, Version: 15},
		{Group: "autoscaling", Version: "v1"}:             {Group: 17500, Version: 15},
		{Group: "autoscaling", Version: "v2"}:             {Group: 17500, Version: 30},
		{Group: "autoscaling", Version: "v2beta1"}:        {Group: 17500, Version: 9},
		{Group: "autoscaling", Version: "v2beta2"}:        {Group: 17500, Version: 1},
		{Group: "batch", Version: "v1"}:                   {Group: 17400, Version: 15},
		{Group: "batch", Version: "v1beta1"}:              {Group: 17400, Version: 9},
		{Group: "batch", Version: "v2alpha1"}:             {Group: 17400, Version: 9},
		{Group: "networking.k8s.io", Version: "v1"}:       {Group: 17200, Version: 15},
		{Group: "networking.k8s.io", Version: "v1beta1"}:  {Group: 17200, Version: 9},
		{Group: "policy", Version: "v1"}:                  {Group: 17100, Version: 15},
		{Group: "policy", Version: "v1beta1"}:             {Group: 17100, Version: 9},
		{Group: "storage.k8s.io", Version: "v1"}:          {Group: 16800, Version: 15},
		{Group: "storage.k8s.io", Version: "v1beta1"}:     {Group: 16800, Version: 9},
		{Group: "storage.k8s.io", Version: "v1alpha1"}:    {Group: 16800, Version: 1},
		{Group: "scheduling.k8s.io", Version: "v1"}:       {Group: 16600, Version: 15},
		{Group: "scheduling.k8s.io", Version: "v1beta1"}:  {Group: 16600, Version: 9},
		{Group: "scheduling.k8s.io", Version: "v1alpha3"}: {Group: 16600, Version: 3},
		{Group: "node.k8s.io", Version: "v1"}:             {Group: 16300, Version: 15},
		{Group: "node.k8s.io", Version: "v1alpha1"}:       {Group: 16300, Version: 1},
		{Group: "node.k8s.io", Version: "v1beta1"}:        {Group: 16300, Version: 9},
		{Group: "resource.k8s.io", Version: "v1"}:         {Group: 16200, Version: 21},
		{Group: "resource.k8s.io", Version: "v1beta2"}:    {Group: 16200, Version: 15},
		{Group: "resource.k8s.io", Version: "v1beta1"}:    {Group: 16200, Version: 9},
		{Group: "resource.k8s.io", Version: "v1alpha3"}:   {Group: 16200, Version: 1},
		{Group: "lifecycle.k8s.io", Version: "v1alpha1"}:  {Group: 15700, Version: 1},
		{Group: "metrics.k8s.io", Version: "v1beta1"}:     {Group: 100, Version: 100},
	} {
		p[gv] = v
	}
	return p
}
