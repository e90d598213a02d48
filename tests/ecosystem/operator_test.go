package ecosystem

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The test operator: ConfigSource custom resources are reconciled into
// ConfigMaps ("<name>-generated") whose data is the spec's data with the
// spec's prefix on every key, applied server-side and owned by the
// ConfigSource so the garbage collector removes them with it.

var configSourceGV = schema.GroupVersion{Group: "operator.ecosystem.skiff.dev", Version: "v1"}

const operatorFieldManager = "configsource-operator"

const configSourceCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: configsources.operator.ecosystem.skiff.dev
spec:
  group: operator.ecosystem.skiff.dev
  names: {plural: configsources, singular: configsource, kind: ConfigSource, listKind: ConfigSourceList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              prefix: {type: string}
              data:
                type: object
                additionalProperties: {type: string}
          status:
            type: object
            properties:
              configMap: {type: string}
              observedGeneration: {type: integer, format: int64}
`

type ConfigSourceSpec struct {
	Prefix string            `json:"prefix,omitempty"`
	Data   map[string]string `json:"data,omitempty"`
}

type ConfigSourceStatus struct {
	ConfigMap          string `json:"configMap,omitempty"`
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
}

type ConfigSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ConfigSourceSpec   `json:"spec,omitempty"`
	Status            ConfigSourceStatus `json:"status,omitempty"`
}

type ConfigSourceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConfigSource `json:"items"`
}

func (c *ConfigSource) DeepCopyObject() runtime.Object {
	out := *c
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec.Data = maps.Clone(c.Spec.Data)
	return &out
}

func (l *ConfigSourceList) DeepCopyObject() runtime.Object {
	out := *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]ConfigSource, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *l.Items[i].DeepCopyObject().(*ConfigSource)
	}
	return &out
}

func operatorScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	s.AddKnownTypes(configSourceGV, &ConfigSource{}, &ConfigSourceList{})
	metav1.AddToGroupVersion(s, configSourceGV)
	return s
}

// configSourceReconciler is the operator's reconciler.
type configSourceReconciler struct {
	client.Client
}

func (r *configSourceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var src ConfigSource
	if err := r.Get(ctx, req.NamespacedName, &src); err != nil {
		// Deleted: the garbage collector removes the ConfigMap.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	data := map[string]string{}
	for k, v := range src.Spec.Data {
		data[src.Spec.Prefix+k] = v
	}
	name := src.Name + "-generated"
	cm := corev1ac.ConfigMap(name, src.Namespace).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": operatorFieldManager}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(configSourceGV.String()).WithKind("ConfigSource").
			WithName(src.Name).WithUID(src.UID).
			WithController(true).WithBlockOwnerDeletion(true)).
		WithData(data)
	if err := r.Apply(ctx, cm, client.FieldOwner(operatorFieldManager), client.ForceOwnership); err != nil {
		return reconcile.Result{}, err
	}
	status := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": configSourceGV.String(),
		"kind":       "ConfigSource",
		"metadata":   map[string]any{"name": src.Name, "namespace": src.Namespace},
		"status":     map[string]any{"configMap": name, "observedGeneration": src.Generation},
	}}
	err := r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(status), client.FieldOwner(operatorFieldManager), client.ForceOwnership)
	return reconcile.Result{}, err
}

// startOperator runs one replica of the operator with leader election in ns
// and returns a function that stops it and waits for it to exit.
func startOperator(t *testing.T, cfg *rest.Config, ns string) (manager.Manager, func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                        operatorScheme(),
		Logger:                        operatorLogger(),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		Cache:                         cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		LeaderElection:                true,
		LeaderElectionID:              "configsource-operator",
		LeaderElectionNamespace:       ns,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 ptr.To(4 * time.Second),
		RenewDeadline:                 ptr.To(3 * time.Second),
		RetryPeriod:                   ptr.To(500 * time.Millisecond),
		// Several managers with the same controller run in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		For(&ConfigSource{}).
		Owns(&corev1.ConfigMap{}).
		Complete(&configSourceReconciler{Client: mgr.GetClient()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("manager did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return mgr, stop
}

// TestControllerRuntimeOperator runs the test operator (two replicas with
// leader election) against the server.
func TestControllerRuntimeOperator(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ns := namespace(t)
	ctx := context.Background()
	cs := admin(t)
	kubectlIn(t, configSourceCRD, "apply", "--server-side", "-f", "-")
	deleteCRD(t, "configsources.operator.ecosystem.skiff.dev")
	kubectlIn(t, "", "wait", "--for=condition=Established", "crd/configsources.operator.ecosystem.skiff.dev", "--timeout=30s")

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("operator log:\n%s", operatorLogs.String())
		}
	})
	var reqsA, reqsB requestLog
	mgrA, stopA := startOperator(t, reqsA.wrap(shared.RESTConfig(t)), ns)
	select {
	case <-mgrA.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("first operator replica not elected")
	}
	lease, err := cs.CoordinationV1().Leases(ns).Get(ctx, "configsource-operator", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("leader election Lease: %v %+v", err, lease)
	}
	holderA := *lease.Spec.HolderIdentity
	mgrB, _ := startOperator(t, reqsB.wrap(shared.RESTConfig(t)), ns)
	select {
	case <-mgrB.Elected():
		t.Fatal("second replica elected while the first holds the lease")
	case <-time.After(2 * time.Second):
	}

	// A separate client (no cache) plays the user.
	user, err := client.New(shared.RESTConfig(t), client.Options{Scheme: operatorScheme()})
	if err != nil {
		t.Fatal(err)
	}
	src := &ConfigSource{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: ConfigSourceSpec{Prefix: "app.", Data: map[string]string{"a": "1", "b": "2"}}}
	if err := user.Create(ctx, src); err != nil {
		t.Fatal(err)
	}
	waitConfigMap := func(want map[string]string) *corev1.ConfigMap {
		t.Helper()
		var cm *corev1.ConfigMap
		eventually(t, 30*time.Second, "generated ConfigMap has "+fmt.Sprint(want), func() error {
			var err error
			cm, err = cs.CoreV1().ConfigMaps(ns).Get(ctx, "app-generated", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !maps.Equal(cm.Data, want) {
				return fmt.Errorf("data %v", cm.Data)
			}
			return nil
		})
		return cm
	}
	cm := waitConfigMap(map[string]string{"app.a": "1", "app.b": "2"})
	if len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != src.UID || cm.OwnerReferences[0].Kind != "ConfigSource" ||
		!ptr.Deref(cm.OwnerReferences[0].Controller, false) || !ptr.Deref(cm.OwnerReferences[0].BlockOwnerDeletion, false) {
		t.Fatalf("ownerReferences: %+v (ConfigSource UID %s)", cm.OwnerReferences, src.UID)
	}
	eventually(t, 30*time.Second, "status applied", func() error {
		var got ConfigSource
		if err := user.Get(ctx, client.ObjectKeyFromObject(src), &got); err != nil {
			return err
		}
		if got.Status.ConfigMap != "app-generated" || got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("status %+v generation %d", got.Status, got.Generation)
		}
		return nil
	})

	t.Logf("%s: updating the ConfigSource", time.Since(start).Round(time.Millisecond))
	// Update: the operator re-applies its full intent, so the dropped key
	// disappears (server-side apply removes fields the manager stops applying).
	if err := user.Get(ctx, client.ObjectKeyFromObject(src), src); err != nil {
		t.Fatal(err)
	}
	src.Spec.Data = map[string]string{"a": "10", "c": "3"}
	if err := user.Update(ctx, src); err != nil {
		t.Fatal(err)
	}
	cm = waitConfigMap(map[string]string{"app.a": "10", "app.c": "3"})
	checkOperatorManagedFields(t, cm)

	t.Logf("%s: stopping the leader", time.Since(start).Round(time.Millisecond))
	// Leader handover: the first replica steps down, the second takes the
	// Lease and reconciles from then on.
	stopA()
	select {
	case <-mgrB.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("second replica not elected after the first stopped")
	}
	lease, err = cs.CoordinationV1().Leases(ns).Get(ctx, "configsource-operator", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == holderA || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("Lease after handover: %v holder %v (was %s)", err, lease.Spec.HolderIdentity, holderA)
	}
	if ptr.Deref(lease.Spec.LeaseTransitions, 0) < 1 {
		t.Fatalf("Lease transitions: %v", lease.Spec.LeaseTransitions)
	}
	if err := user.Get(ctx, client.ObjectKeyFromObject(src), src); err != nil {
		t.Fatal(err)
	}
	src.Spec.Prefix = "v2."
	if err := user.Update(ctx, src); err != nil {
		t.Fatal(err)
	}
	waitConfigMap(map[string]string{"v2.a": "10", "v2.c": "3"})

	t.Logf("%s: deleting the ConfigMap", time.Since(start).Round(time.Millisecond))
	// Drift: the operator watches its ConfigMaps and recreates a deleted one.
	oldUID := cm.UID
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "app-generated", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cm = waitConfigMap(map[string]string{"v2.a": "10", "v2.c": "3"})
	if cm.UID == oldUID {
		t.Fatal("ConfigMap was not recreated")
	}

	t.Logf("%s: deleting the ConfigSource (garbage collection)", time.Since(start).Round(time.Millisecond))
	// Deleting the custom resource garbage-collects the ConfigMap through its
	// ownerReference.
	if err := user.Delete(ctx, src); err != nil {
		t.Fatal(err)
	}
	eventually(t, 120*time.Second, "ConfigMap garbage-collected", func() error {
		_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "app-generated", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get: %v", err)
	})

	t.Logf("%s: ConfigMap garbage-collected", time.Since(start).Round(time.Millisecond))
	// Wire checks: the caches used WatchList (sendInitialEvents) with no
	// fallback LIST, protobuf for ConfigMaps, and writes were apply patches.
	for _, l := range []*requestLog{&reqsA, &reqsB} {
		for _, res := range []string{"/api/v1/namespaces/" + ns + "/configmaps", "/apis/operator.ecosystem.skiff.dev/v1/namespaces/" + ns + "/configsources"} {
			watches := l.find(func(r recorded) bool {
				return r.Method == "GET" && r.Path == res && strings.Contains(r.Query, "watch=true") && strings.Contains(r.Query, "sendInitialEvents=true")
			})
			if len(watches) == 0 {
				t.Errorf("no WatchList request for %s; requests: %v", res, l.find(func(r recorded) bool { return strings.HasPrefix(r.Path, res) }))
			}
			lists := l.find(func(r recorded) bool {
				return r.Method == "GET" && r.Path == res && !strings.Contains(r.Query, "watch=true")
			})
			if len(lists) != 0 {
				t.Errorf("cache fell back to LIST for %s: %v", res, lists)
			}
			if len(watches) > 0 && strings.HasSuffix(res, "/configmaps") && !strings.HasPrefix(watches[0].Accept, "application/vnd.kubernetes.protobuf") {
				t.Errorf("ConfigMap watch is not protobuf: Accept %q", watches[0].Accept)
			}
		}
	}
	applies := reqsA.find(func(r recorded) bool {
		return r.Method == "PATCH" && strings.HasSuffix(r.Path, "/configmaps/app-generated") && r.ContentType == "application/apply-patch+yaml" &&
			strings.Contains(r.Query, "fieldManager="+operatorFieldManager) && strings.Contains(r.Query, "force=true")
	})
	if len(applies) == 0 {
		t.Errorf("no server-side apply of the ConfigMap by the first replica")
	}
}

// checkOperatorManagedFields checks that the operator owns the ConfigMap's
// data through an Apply entry in managedFields, and that nobody updated it.
func checkOperatorManagedFields(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	var found bool
	for _, mf := range cm.ManagedFields {
		if mf.Operation == metav1.ManagedFieldsOperationUpdate {
			t.Fatalf("unexpected Update entry in managedFields: %s", mf.Manager)
		}
		if mf.Manager != operatorFieldManager || mf.Operation != metav1.ManagedFieldsOperationApply {
			continue
		}
		found = true
		var fields map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &fields); err != nil {
			t.Fatal(err)
		}
		data, _ := fields["f:data"].(map[string]any)
		keys := slices.Sorted(maps.Keys(data))
		if !slices.Equal(keys, []string{"f:app.a", "f:app.c"}) {
			t.Fatalf("operator owns data fields %v, want f:app.a f:app.c", keys)
		}
		meta, _ := fields["f:metadata"].(map[string]any)
		if _, ok := meta["f:ownerReferences"]; !ok {
			t.Fatalf("operator does not own ownerReferences: %s", mf.FieldsV1.Raw)
		}
	}
	if !found {
		t.Fatalf("no Apply entry for %s in managedFields: %+v", operatorFieldManager, cm.ManagedFields)
	}
}

// operatorLogs collects controller-runtime's logs (printed when a test fails).
var (
	operatorLogs  syncBuffer
	setLoggerOnce sync.Once
)

// operatorLogger returns a logger into operatorLogs, also installed as
// controller-runtime's global logger (informers log through it).
func operatorLogger() logr.Logger {
	l := funcr.New(func(prefix, args string) { operatorLogs.printf("%s %s", prefix, args) }, funcr.Options{Verbosity: 1})
	setLoggerOnce.Do(func() { ctrllog.SetLogger(l) })
	return l
}

// syncBuffer is a goroutine-safe log buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(&s.b, format+"\n", args...)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
