package controllers

import (
	"context"
	"fmt"
	"time"

	apiextensionsscheme "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	pluginvalidatingadmissionpolicy "k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	k8sscheme "k8s.io/client-go/kubernetes/scheme"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/controller-manager/pkg/clientbuilder"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
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

// runVAPStatus runs upstream's ValidatingAdmissionPolicy status controller
// (it type-checks each policy's CEL expressions against the schemas of the
// types the policy matches and writes status.typeChecking) wired as
// kube-controller-manager wires it — its own ServiceAccount credentials,
// a discovery RESTMapper reset every 30 s, upstream's built-in definitions
// combined with the server's OpenAPI for other types — except that the
// schema resolver is built when a policy is checked and dropped a minute
// later (lazyschema). Upstream builds it when the controller is created
// and keeps it: ~8.5 MB of heap for the life of the process, every
// generated definition, though policies are checked only when they change.
func runVAPStatus(ctx context.Context, cc *config.CompletedConfig) error {
	clients := clientbuilder.NewDynamicClientBuilder(restclient.AnonymousClientConfig(cc.Kubeconfig), cc.Client.CoreV1(), metav1.NamespaceSystem)
	client, err := clients.Client(vapStatusController)
	if err != nil {
		return fmt.Errorf("controllers: %s: %w", vapStatusController, err)
	}
	discovery, err := clients.DiscoveryClient(vapStatusController)
	if err != nil {
		return fmt.Errorf("controllers: %s: %w", vapStatusController, err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery))
	go wait.UntilWithContext(ctx, func(context.Context) { mapper.Reset() }, 30*time.Second)
	schemas := lazyschema.New(func() resolver.SchemaResolver {
		return resolver.NewDefinitionsSchemaResolver(openapi.GetOpenAPIDefinitions, k8sscheme.Scheme, apiextensionsscheme.Scheme).
			Combine(&resolver.ClientDiscoveryResolver{Discovery: discovery})
	}, schemaIdle)
	factory := informers.NewSharedInformerFactory(client, app.ResyncPeriod(cc)())
	c, err := validatingadmissionpolicystatus.NewController(
		factory.Admissionregistration().V1().ValidatingAdmissionPolicies(),
		client.AdmissionregistrationV1().ValidatingAdmissionPolicies(),
		&pluginvalidatingadmissionpolicy.TypeChecker{SchemaResolver: schemas, RestMapper: mapper})
	if err != nil {
		return fmt.Errorf("controllers: %s: %w", vapStatusController, err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	c.Run(ctx, int(cc.ComponentConfig.ValidatingAdmissionPolicyStatusController.ConcurrentPolicySyncs))
	return nil
}
