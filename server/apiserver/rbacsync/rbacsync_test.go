package rbacsync

import (
	"context"
	"maps"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var (
	readPods  = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}
	readNodes = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}
	userA     = rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "a"}
	userB     = rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "b"}
)

func role(name string, rules ...rbacv1.PolicyRule) rbacv1.ClusterRole {
	return rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
}

func binding(name, roleName string, subjects ...rbacv1.Subject) rbacv1.ClusterRoleBinding {
	return rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName}, Subjects: subjects}
}

func TestReconcile(t *testing.T) {
	pinned := role("pinned", readPods)
	pinned.Annotations = map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "false"}
	existing := []runtime.Object{
		ptr(role("missing-rule", readPods)),
		ptr(role("same", readPods)),
		&pinned,
		ptr(binding("missing-subject", "same", userA)),
		ptr(binding("other-role", "pinned", userA)),
		ptr(binding("same-binding", "same", userA)),
	}
	client := fake.NewClientset(existing...)
	roles := []rbacv1.ClusterRole{
		role("missing-rule", readPods, readNodes),
		role("same", readPods),
		role("pinned", readPods, readNodes),
		role("new", readNodes),
	}
	bindings := []rbacv1.ClusterRoleBinding{
		binding("missing-subject", "same", userA, userB),
		binding("other-role", "same", userA),
		binding("same-binding", "same", userA),
		binding("new-binding", "new", userB),
	}
	ctx := context.Background()
	if err := Reconcile(ctx, client.RbacV1(), roles, bindings); err != nil {
		t.Fatal(err)
	}

	var writes []string
	reads := map[string]int{}
	for _, a := range client.Actions() {
		switch a.GetVerb() {
		case "get", "list":
			reads[a.GetVerb()+" "+a.GetResource().Resource]++
		default:
			name := ""
			switch a := a.(type) {
			case k8stesting.CreateAction:
				name = a.GetObject().(metav1.Object).GetName()
			case k8stesting.UpdateAction:
				name = a.GetObject().(metav1.Object).GetName()
			case k8stesting.DeleteAction:
				name = a.GetName()
			}
			writes = append(writes, a.GetVerb()+" "+a.GetResource().Resource+" "+name)
		}
	}
	if want := map[string]int{"list clusterroles": 1, "list clusterrolebindings": 1}; !maps.Equal(reads, want) {
		t.Errorf("reads %v, want %v (one LIST per kind, no GETs)", reads, want)
	}
	slices.Sort(writes)
	want := []string{
		"create clusterrolebindings new-binding",
		"create clusterrolebindings other-role", // roleRef changed: recreated
		"create clusterroles new",
		"delete clusterrolebindings other-role",
		"update clusterrolebindings missing-subject",
		"update clusterroles missing-rule",
	}
	if !slices.Equal(writes, want) {
		t.Errorf("writes\n%v\nwant\n%v", writes, want)
	}

	r, err := client.RbacV1().ClusterRoles().Get(ctx, "missing-rule", metav1.GetOptions{})
	if err != nil || len(r.Rules) != 2 {
		t.Errorf("missing-rule after reconcile: %v %v", r, err)
	}
	r, err = client.RbacV1().ClusterRoles().Get(ctx, "pinned", metav1.GetOptions{})
	if err != nil || len(r.Rules) != 1 {
		t.Errorf("autoupdate=false role changed: %v %v", r, err)
	}
	b, err := client.RbacV1().ClusterRoleBindings().Get(ctx, "other-role", metav1.GetOptions{})
	if err != nil || b.RoleRef.Name != "same" {
		t.Errorf("other-role after reconcile: %v %v", b, err)
	}
	b, err = client.RbacV1().ClusterRoleBindings().Get(ctx, "missing-subject", metav1.GetOptions{})
	if err != nil || len(b.Subjects) != 2 {
		t.Errorf("missing-subject after reconcile: %v %v", b, err)
	}
}

// A role changed between the LIST and the update is a conflict the caller
// sees (and retries with a fresh LIST).
func TestReconcileConflict(t *testing.T) {
	client := fake.NewClientset(ptr(role("r", readPods)))
	client.PrependReactor("update", "clusterroles", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: rbacv1.GroupName, Resource: "clusterroles"}, "r", nil)
	})
	err := Reconcile(context.Background(), client.RbacV1(), []rbacv1.ClusterRole{role("r", readPods, readNodes)}, nil)
	if !apierrors.IsConflict(err) {
		t.Fatalf("err %v, want a conflict", err)
	}
}

func ptr[T any](v T) *T { return &v }
