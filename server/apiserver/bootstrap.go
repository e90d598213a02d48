package apiserver

import (
	"context"
	"fmt"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-helpers/auth/rbac/reconciliation"
	schedulingapiv1 "k8s.io/kubernetes/pkg/apis/scheduling/v1"
	rbacrest "k8s.io/kubernetes/pkg/registry/rbac/rest"
	schedulingrest "k8s.io/kubernetes/pkg/registry/scheduling/rest"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"

	"github.com/skiff-sh/skiff/server/apiserver/rbacsync"
	"github.com/skiff-sh/skiff/server/localpath"
)

// Upstream's bootstrap hooks for the RBAC policy and the system priority
// classes wait a full second (wait.Poll) before their first attempt, and
// /readyz waits for them: alone they make a warm start take over a second.
// Skiff replaces them with hooks that do the same reconciliation at once and
// retry quickly while the loopback client is not yet served.
var replacedHooks = []string{rbacrest.PostStartHookName, schedulingrest.PostStartHookName}

const (
	bootstrapRetry   = 50 * time.Millisecond
	bootstrapTimeout = 30 * time.Second
)

func addBootstrapHooks(s *genericapiserver.GenericAPIServer) error {
	if err := s.AddPostStartHook("skiff/bootstrap-roles", hook(ensureRBAC)); err != nil {
		return err
	}
	return s.AddPostStartHook("skiff/bootstrap-priority-classes", hook(ensurePriorityClasses))
}

func hook(f func(context.Context, kubernetes.Interface) error) genericapiserver.PostStartHookFunc {
	return func(hc genericapiserver.PostStartHookContext) error {
		client, err := kubernetes.NewForConfig(hc.LoopbackClientConfig)
		if err != nil {
			return err
		}
		var last error
		err = wait.PollUntilContextTimeout(hc, bootstrapRetry, bootstrapTimeout, true, func(ctx context.Context) (bool, error) {
			last = f(ctx, client)
			return last == nil, nil
		})
		if err != nil {
			return fmt.Errorf("%w (last error: %v)", err, last)
		}
		return nil
	}
}

// ensureRBAC reconciles upstream's bootstrap policy (the same roles and
// bindings kube-apiserver creates, from bootstrappolicy) into the cluster:
// the cluster-scoped ones against one LIST per kind (rbacsync), the few
// namespaced ones one by one.
func ensureRBAC(ctx context.Context, client kubernetes.Interface) error {
	rbac := client.RbacV1()
	if err := rbacsync.Reconcile(ctx, rbac,
		append(append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...), skiffRoles()...),
		append(append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...), skiffBindings()...)); err != nil {
		return err
	}
	for _, roles := range bootstrappolicy.NamespaceRoles() {
		for _, r := range roles {
			if _, err := (&reconciliation.ReconcileRoleOptions{
				Role:    reconciliation.RoleRuleOwner{Role: &r},
				Client:  reconciliation.RoleModifier{Client: rbac, NamespaceClient: client.CoreV1().Namespaces()},
				Confirm: true,
			}).Run(); err != nil {
				return fmt.Errorf("role %s/%s: %w", r.Namespace, r.Name, err)
			}
		}
	}
	for _, bindings := range bootstrappolicy.NamespaceRoleBindings() {
		for _, b := range bindings {
			if _, err := (&reconciliation.ReconcileRoleBindingOptions{
				RoleBinding: reconciliation.RoleBindingAdapter{RoleBinding: &b},
				Client:      reconciliation.RoleBindingClientAdapter{Client: rbac, NamespaceClient: client.CoreV1().Namespaces()},
				Confirm:     true,
			}).Run(); err != nil {
				return fmt.Errorf("rolebinding %s/%s: %w", b.Namespace, b.Name, err)
			}
		}
	}
	return nil
}

// KubeletClientUser is the API server's user name towards kubelets.
const KubeletClientUser = "kube-apiserver-kubelet-client"

// skiffRoles are Skiff's own control loops' roles.
func skiffRoles() []rbacv1.ClusterRole {
	return []rbacv1.ClusterRole{localpath.ClusterRole()}
}

// skiffBindings are the bindings Skiff adds to upstream's policy: the API
// server may use every kubelet API (logs, exec, port-forward, stats), as
// kubeadm and k3s bind it.
func skiffBindings() []rbacv1.ClusterRoleBinding {
	return []rbacv1.ClusterRoleBinding{{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff:kube-apiserver-kubelet-client",
			Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: KubeletClientUser}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: localpath.Identity},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: localpath.Identity},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: localpath.Identity}},
	}}
}

// ensurePriorityClasses creates system-cluster-critical and
// system-node-critical as upstream does.
func ensurePriorityClasses(ctx context.Context, client kubernetes.Interface) error {
	pcs := client.SchedulingV1().PriorityClasses()
	for _, pc := range schedulingapiv1.SystemPriorityClasses() {
		_, err := pcs.Get(ctx, pc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = pcs.Create(ctx, pc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("priorityclass %s: %w", pc.Name, err)
		}
	}
	return nil
}
