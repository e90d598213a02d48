package ecosystem

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// helmConfig is a Helm action configuration for namespace ns, as the helm
// CLI builds it, storing releases in Secrets. Requests are recorded in log.
func helmConfig(t *testing.T, ns string, log *requestLog) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(true)
	kubeconfig, cacheDir := shared.Kubeconfig, t.TempDir()
	flags.KubeConfig, flags.Namespace, flags.CacheDir = &kubeconfig, &ns, &cacheDir
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config { return log.wrap(c) }
	var mu sync.Mutex
	var debug strings.Builder
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("helm debug log:\n%s", debug.String())
			mu.Unlock()
		}
	})
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, ns, "secret", func(format string, v ...any) {
		mu.Lock()
		fmt.Fprintf(&debug, format+"\n", v...)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHelmLifecycle drives a `helm create` chart through install, upgrade,
// history, rollback, list and uninstall with OpenAPI validation on.
func TestHelmLifecycle(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	cs := admin(t)
	dir, err := chartutil.Create("demo", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var log requestLog
	cfg := helmConfig(t, ns, &log)

	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace, install.Timeout = "demo", ns, 2*time.Minute
	rel, err := install.Run(ch, nil)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed || rel.Version != 1 {
		t.Fatalf("install: status %s revision %d", rel.Info.Status, rel.Version)
	}
	// The validation step read the served OpenAPI v3 documents.
	if got := log.find(func(r recorded) bool { return r.Path == "/openapi/v3/apis/apps/v1" }); len(got) == 0 {
		t.Fatalf("helm did not validate against OpenAPI v3 (no GET /openapi/v3/apis/apps/v1); requests: %v", log.find(func(recorded) bool { return true }))
	}
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 1 || dep.Spec.Template.Spec.Containers[0].Image != "nginx:"+ch.Metadata.AppVersion ||
		dep.Spec.Template.Spec.ServiceAccountName != "demo" || dep.Labels["app.kubernetes.io/managed-by"] != "Helm" ||
		dep.Annotations["meta.helm.sh/release-name"] != "demo" || dep.Annotations["meta.helm.sh/release-namespace"] != ns {
		t.Fatalf("installed deployment: replicas %d image %s sa %s labels %v annotations %v", *dep.Spec.Replicas,
			dep.Spec.Template.Spec.Containers[0].Image, dep.Spec.Template.Spec.ServiceAccountName, dep.Labels, dep.Annotations)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Ports[0].Port != 80 || svc.Spec.ClusterIP == "" || svc.Spec.Type != "ClusterIP" {
		t.Fatalf("installed service: %+v", svc.Spec)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "demo", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// The test hook is not installed; ingress is disabled by default.
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "demo-test-connection", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("test hook pod: want NotFound, got %v", err)
	}

	// Upgrade with changed values: new replica count, image tag and port,
	// and an Ingress that did not exist in revision 1.
	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace, upgrade.Timeout = ns, 2*time.Minute
	vals := map[string]any{
		"replicaCount": 3,
		"image":        map[string]any{"tag": "1.27"},
		"service":      map[string]any{"port": 8080},
		"ingress":      map[string]any{"enabled": true},
	}
	rel, err = upgrade.Run("demo", ch, vals)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed || rel.Version != 2 {
		t.Fatalf("upgrade: status %s revision %d", rel.Info.Status, rel.Version)
	}
	dep, err = cs.AppsV1().Deployments(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 3 || dep.Spec.Template.Spec.Containers[0].Image != "nginx:1.27" || dep.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort != 8080 {
		t.Fatalf("upgraded deployment: replicas %d image %s port %d", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image, dep.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort)
	}
	if svc, err = cs.CoreV1().Services(ns).Get(ctx, "demo", metav1.GetOptions{}); err != nil || svc.Spec.Ports[0].Port != 8080 {
		t.Fatalf("upgraded service: %v %+v", err, svc.Spec.Ports)
	}
	ing, err := cs.NetworkingV1().Ingresses(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ingress added by the upgrade: %v", err)
	}
	if ing.Spec.Rules[0].Host != "chart-example.local" || ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Number != 8080 {
		t.Fatalf("ingress: %+v", ing.Spec)
	}

	// Roll back to revision 1: revision 3 has revision 1's manifest, and the
	// Ingress is deleted again.
	rollback := action.NewRollback(cfg)
	rollback.Version, rollback.Timeout = 1, 2*time.Minute
	if err := rollback.Run("demo"); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	dep, err = cs.AppsV1().Deployments(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 1 || dep.Spec.Template.Spec.Containers[0].Image != "nginx:"+ch.Metadata.AppVersion {
		t.Fatalf("rolled back deployment: replicas %d image %s", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image)
	}
	if svc, err = cs.CoreV1().Services(ns).Get(ctx, "demo", metav1.GetOptions{}); err != nil || svc.Spec.Ports[0].Port != 80 {
		t.Fatalf("rolled back service: %v %+v", err, svc.Spec.Ports)
	}
	eventually(t, 30*time.Second, "ingress deleted by the rollback", func() error {
		_, err := cs.NetworkingV1().Ingresses(ns).Get(ctx, "demo", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get ingress: %v", err)
	})

	// History lists the three revisions in order.
	hist, err := action.NewHistory(cfg).Run("demo")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range hist {
		got = append(got, fmt.Sprintf("%d:%s:%s", r.Version, r.Info.Status, r.Info.Description))
	}
	want := []string{"1:superseded:Install complete", "2:superseded:Upgrade complete", "3:deployed:Rollback to 1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("history: got %v, want %v", got, want)
	}
	if hist[2].Config != nil && len(hist[2].Config) != 0 {
		t.Fatalf("revision 3 should carry revision 1's (empty) values, got %v", hist[2].Config)
	}
	// Releases are stored in Secrets, one per revision, as upstream Helm does.
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=demo"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range secrets.Items {
		if s.Type != "helm.sh/release.v1" {
			t.Fatalf("release secret %s has type %s", s.Name, s.Type)
		}
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "sh.helm.release.v1.demo.v1,sh.helm.release.v1.demo.v2,sh.helm.release.v1.demo.v3" {
		t.Fatalf("release secrets: %v", names)
	}

	// List shows the deployed release at revision 3.
	list, err := action.NewList(cfg).Run()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "demo" || list[0].Version != 3 || list[0].Info.Status != release.StatusDeployed ||
		list[0].Chart.Metadata.Name != "demo" || list[0].Namespace != ns {
		t.Fatalf("list: %+v", list)
	}

	// Uninstall removes the objects and the release records.
	un := action.NewUninstall(cfg)
	un.Timeout = 2 * time.Minute
	resp, err := un.Run("demo")
	if err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if resp.Release.Info.Status != release.StatusUninstalled {
		t.Fatalf("uninstall status: %s", resp.Release.Info.Status)
	}
	eventually(t, 30*time.Second, "release objects deleted", func() error {
		if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "demo", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("deployment: %v", err)
		}
		if _, err := cs.CoreV1().Services(ns).Get(ctx, "demo", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("service: %v", err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "demo", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("serviceaccount: %v", err)
		}
		return nil
	})
	secrets, err = cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil || len(secrets.Items) != 0 {
		t.Fatalf("release secrets after uninstall: %v %d", err, len(secrets.Items))
	}
	list, err = action.NewList(cfg).Run()
	if err != nil || len(list) != 0 {
		t.Fatalf("list after uninstall: %v %+v", err, list)
	}
}

const crontabCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.helm.ecosystem.skiff.dev
spec:
  group: helm.ecosystem.skiff.dev
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec: {type: string, pattern: '^(\S+ ){4}\S+$'}
              image: {type: string}
              replicas: {type: integer, minimum: 1}
`

const crontabTemplate = `apiVersion: helm.ecosystem.skiff.dev/v1
kind: CronTab
metadata:
  name: {{ .Release.Name }}-tab
  labels:
    app.kubernetes.io/managed-by: {{ .Release.Service }}
spec:
  cronSpec: {{ .Values.schedule | quote }}
  image: {{ .Values.image | quote }}
  replicas: {{ .Values.replicas }}
`

// TestHelmChartWithCRD installs a chart that ships a CRD in crds/ and a
// custom resource of that type in templates/.
func TestHelmChartWithCRD(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "crontab")
	files := map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: crontab\nversion: 0.1.0\nappVersion: \"1.0\"\n",
		"values.yaml":           "schedule: \"*/5 * * * *\"\nimage: busybox:1.36\nreplicas: 2\n",
		"crds/crontab.yaml":     crontabCRD,
		"templates/cr.yaml":     crontabTemplate,
		"templates/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  schedule: {{ .Values.schedule | quote }}\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.CRDObjects()) != 1 {
		t.Fatalf("chart has %d CRDs", len(ch.CRDObjects()))
	}
	crdName := "crontabs.helm.ecosystem.skiff.dev"
	deleteCRD(t, crdName)

	var log requestLog
	cfg := helmConfig(t, ns, &log)
	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace, install.Timeout = "cron", ns, 2*time.Minute
	rel, err := install.Run(ch, nil)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("install status %s", rel.Info.Status)
	}
	dyn := dynamicClient(t)
	crd, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).Get(ctx, crdName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CRD from crds/: %v", err)
	}
	if !crdEstablished(crd.Object) {
		t.Fatalf("CRD not Established: %v", crd.Object["status"])
	}
	cr, err := dyn.Resource(schema.GroupVersionResource{Group: "helm.ecosystem.skiff.dev", Version: "v1", Resource: "crontabs"}).Namespace(ns).Get(ctx, "cron-tab", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("custom resource from templates/: %v", err)
	}
	spec, _ := cr.Object["spec"].(map[string]any)
	if spec["cronSpec"] != "*/5 * * * *" || spec["image"] != "busybox:1.36" || spec["replicas"] != int64(2) ||
		cr.GetAnnotations()["meta.helm.sh/release-name"] != "cron" {
		t.Fatalf("custom resource: %v", cr.Object)
	}
	if cm, err := admin(t).CoreV1().ConfigMaps(ns).Get(ctx, "cron-config", metav1.GetOptions{}); err != nil || cm.Data["schedule"] != "*/5 * * * *" {
		t.Fatalf("configmap: %v %v", err, cm)
	}

	// An upgrade whose custom resource violates the CRD schema fails with the
	// server's validation error and leaves the deployed revision in place.
	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace, upgrade.Timeout = ns, 2*time.Minute
	_, err = upgrade.Run("cron", ch, map[string]any{"schedule": "not a cron spec", "replicas": 0})
	if err == nil || !strings.Contains(err.Error(), "spec.cronSpec") || !strings.Contains(err.Error(), "spec.replicas") {
		t.Fatalf("upgrade with an invalid custom resource: want a schema error naming spec.cronSpec and spec.replicas, got %v", err)
	}
	cr, err = dyn.Resource(schema.GroupVersionResource{Group: "helm.ecosystem.skiff.dev", Version: "v1", Resource: "crontabs"}).Namespace(ns).Get(ctx, "cron-tab", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := cr.Object["spec"].(map[string]any); spec["cronSpec"] != "*/5 * * * *" || spec["replicas"] != int64(2) {
		t.Fatalf("custom resource changed by a rejected upgrade: %v", cr.Object["spec"])
	}
	hist, err := action.NewHistory(cfg).Run("cron")
	if err != nil || len(hist) != 2 || hist[0].Info.Status != release.StatusDeployed || hist[1].Info.Status != release.StatusFailed {
		var st []string
		for _, h := range hist {
			st = append(st, string(h.Info.Status))
		}
		t.Fatalf("history after a failed upgrade: %v %v", err, st)
	}

	// Uninstall keeps the CRD (Helm never deletes crds/), removes the CR.
	if _, err := action.NewUninstall(cfg).Run("cron"); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	eventually(t, 30*time.Second, "custom resource deleted", func() error {
		_, err := dyn.Resource(schema.GroupVersionResource{Group: "helm.ecosystem.skiff.dev", Version: "v1", Resource: "crontabs"}).Namespace(ns).Get(ctx, "cron-tab", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get: %v", err)
	})
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).Get(ctx, crdName, metav1.GetOptions{}); err != nil {
		t.Fatalf("CRD after uninstall: %v", err)
	}
}

func dynamicClient(t testing.TB) *dynamic.DynamicClient {
	t.Helper()
	d, err := dynamic.NewForConfig(shared.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// crdEstablished reports whether a CRD object has Established=True.
func crdEstablished(obj map[string]any) bool {
	status, _ := obj["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
