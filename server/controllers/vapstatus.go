package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	apiextensionsscheme "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/scheme"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	pluginvalidatingadmissionpolicy "k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	k8sscheme "k8s.io/client-go/kubernetes/scheme"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/controller-manager/app"
	"k8s.io/controller-manager/pkg/clientbuilder"
	"k8s.io/klog/v2"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/config"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
	"k8s.io/kubernetes/pkg/controller/validatingadmissionpolicystatus"
	"k8s.io/kubernetes/pkg/generated/openapi"

	"github.com/skiff-sh/skiff/server/controllers/lazyschema"
)

// vapStatusController is upstream's name for the ValidatingAdmissionPolicy
// status controller; Run disables it in the controller manager and runs
// it with runVAPStatus.
const vapStatusController = names.ValidatingAdmissionPolicyStatusController

// schemaIdle is how long the VAP status controller's schema resolver is
// kept after its last use.
const schemaIdle = time.Minute

// vapStatusEnabled reports whether the controller manager's --controllers
// list, without the entry Skiff adds to keep it out of the controller
// manager (args), enables the VAP status controller — so a user's
// --kube-controller-manager-arg=controllers=...,-validatingadmissionpolicy-
// status-controller still turns it off.
func vapStatusEnabled(controllers []string) bool {
	if i := slices.Index(controllers, "-"+vapStatusController); i >= 0 {
		controllers = slices.Delete(slices.Clone(controllers), i, i+1)
	}
	return app.IsControllerEnabled(vapStatusController, sets.NewString(), controllers)
}

// runVAPStatus runs upstream's ValidatingAdmissionPolicy status controller
// (it type-checks each policy's CEL expressions against the schemas of the
// types the policy matches and writes status.typeChecking) wired as
// kube-controller-manager wires it — the controller's own ServiceAccount
// credentials (unless --use-service-account-credentials is off), the
// informer on the shared-informers identity with managedFields trimmed,
// a discovery RESTMapper reset every 30 s, upstream's built-in definitions
// combined with the server's OpenAPI for other types — except that the
// schema resolver is built when a policy is checked and dropped a minute
// later (lazyschema). Upstream builds it when the controller is created
// and keeps it: ~8.5 MB of heap for the life of the process, every
// generated definition, though policies are checked only when they change.
// Clients are retried until ctx ends (the controller manager waits for the
// API server the same way); only a configuration error is returned.
func runVAPStatus(ctx context.Context, cc *config.CompletedConfig) error {
	kubeconfig := cc.Kubeconfig
	if !vapStatusEnabled(cc.ComponentConfig.Generic.Controllers) {
		<-ctx.Done()
		return nil
	}
	root := clientbuilder.SimpleControllerClientBuilder{ClientConfig: kubeconfig}
	var clients clientbuilder.ControllerClientBuilder = root
	if cc.ComponentConfig.KubeCloudShared.UseServiceAccountCredentials {
		clients = clientbuilder.NewDynamicClientBuilder(restclient.AnonymousClientConfig(kubeconfig), cc.Client.CoreV1(), metav1.NamespaceSystem)
	}
	var (
		client, shared kubernetes.Interface
		disco          discovery.DiscoveryInterface
	)
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(context.Context) (bool, error) {
		var err error
		if client == nil {
			client, err = clients.Client(vapStatusController)
		}
		if err == nil && shared == nil {
			shared, err = root.Client("shared-informers")
		}
		if err == nil && disco == nil {
			disco, err = root.DiscoveryClient("controller-discovery")
		}
		if err != nil {
			klog.FromContext(ctx).Error(err, "Creating a client failed; retrying", "controller", vapStatusController)
		}
		return err == nil, nil
	})
	if err != nil {
		return nil // ctx ended
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	go wait.UntilWithContext(ctx, func(context.Context) { mapper.Reset() }, 30*time.Second)
	schemas := lazyschema.New(func() resolver.SchemaResolver {
		return resolver.NewDefinitionsSchemaResolver(openapi.GetOpenAPIDefinitions, k8sscheme.Scheme, apiextensionsscheme.Scheme).
			Combine(&resolver.ClientDiscoveryResolver{Discovery: disco})
	}, schemaIdle)
	informerName, err := cache.NewInformerName("skiff-vap-status")
	if err != nil {
		return fmt.Errorf("controllers: %s: %w", vapStatusController, err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(shared, kcm.ResyncPeriod(cc)(),
		informers.WithTransform(trimManagedFields), informers.WithInformerName(informerName))
	defer factory.Shutdown() // also releases the informer name for the next run
	c, err := validatingadmissionpolicystatus.NewController(
		factory.Admissionregistration().V1().ValidatingAdmissionPolicies(),
		client.AdmissionregistrationV1().ValidatingAdmissionPolicies(),
		&pluginvalidatingadmissionpolicy.TypeChecker{SchemaResolver: schemas, RestMapper: mapper})
	if err != nil {
		return fmt.Errorf("controllers: %s: %w", vapStatusController, err)
	}
	factory.StartWithContext(ctx)
	c.Run(ctx, int(cc.ComponentConfig.ValidatingAdmissionPolicyStatusController.ConcurrentPolicySyncs))
	return nil
}

// trimManagedFields drops managedFields from informer objects, as the
// controller manager's shared informers do.
func trimManagedFields(obj any) (any, error) {
	if accessor, err := meta.Accessor(obj); err == nil && accessor.GetManagedFields() != nil {
		accessor.SetManagedFields(nil)
	}
	return obj, nil
}
