package localpath

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

const (
	testNode = "node-a"
	testUID  = types.UID("1234-abcd")
)

// newController builds a controller whose informer caches hold the given
// objects; client holds whatever the API should answer.
func newController(t *testing.T, client *fake.Clientset, objs ...runtime.Object) *controller {
	t.Helper()
	c := &controller{
		Config: Config{Client: client, HelperImage: "img", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		pvcs:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		pvs:    cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		nodes:  cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
	}
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *corev1.PersistentVolumeClaim:
			err = c.pvcs.Add(o)
		case *corev1.PersistentVolume:
			err = c.pvs.Add(o)
		case *corev1.Node:
			err = c.nodes.Add(o)
		default:
			t.Fatalf("unexpected cache object %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func defaultClass() *storagev1.StorageClass {
	mode := storagev1.VolumeBindingWaitForFirstConsumer
	reclaim := corev1.PersistentVolumeReclaimDelete
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: StorageClass},
		Provisioner:       Provisioner,
		VolumeBindingMode: &mode,
		ReclaimPolicy:     &reclaim,
	}
}

func basePVC() *corev1.PersistentVolumeClaim {
	class := StorageClass
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: "data", Namespace: "app", UID: testUID, ResourceVersion: "7",
			Annotations: map[string]string{selectedNodeAnnotation: testNode},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("2Gi"),
			}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
}

func node(name string, annotations map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

func pvName() string { return "pvc-" + string(testUID) }

func createdPVs(t *testing.T, client *fake.Clientset) []corev1.PersistentVolume {
	t.Helper()
	l, err := client.CoreV1().PersistentVolumes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestEnsureStorageClass(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	for i := range 2 { // second call must be a no-op
		if err := EnsureStorageClass(ctx, client); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	sc, err := client.StorageV1().StorageClasses().Get(ctx, StorageClass, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sc.Annotations["storageclass.kubernetes.io/is-default-class"]; got != "true" {
		t.Errorf("is-default-class = %q, want true", got)
	}
	if sc.Provisioner != Provisioner {
		t.Errorf("provisioner = %q", sc.Provisioner)
	}
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		t.Errorf("volumeBindingMode = %v", sc.VolumeBindingMode)
	}
	if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("reclaimPolicy = %v", sc.ReclaimPolicy)
	}
	l, err := client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 {
		t.Errorf("%d storage classes, want 1", len(l.Items))
	}
}

func TestEnsureStorageClassKeepsExisting(t *testing.T) {
	// An administrator's edited class is left alone.
	ctx := context.Background()
	existing := defaultClass()
	existing.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "false"}
	client := fake.NewClientset(existing)
	if err := EnsureStorageClass(ctx, client); err != nil {
		t.Fatal(err)
	}
	sc, err := client.StorageV1().StorageClasses().Get(ctx, StorageClass, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "false" {
		t.Errorf("existing class was modified: %v", sc.Annotations)
	}
}

func TestEnsureStorageClassError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "storageclasses", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(storagev1.Resource("storageclasses"), StorageClass, nil)
	})
	if err := EnsureStorageClass(context.Background(), client); !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want Forbidden", err)
	}
}

func TestSyncPVCProvisions(t *testing.T) {
	tests := []struct {
		name    string
		node    *corev1.Node
		wantDir string
	}{
		{"node annotation", node(testNode, map[string]string{NodeDirAnnotation: "/mnt/fast"}), "/mnt/fast"},
		{"annotation is cleaned", node(testNode, map[string]string{NodeDirAnnotation: "/mnt/x/../fast/"}), "/mnt/fast"},
		{"no annotation", node(testNode, nil), DefaultDir},
		{"empty annotation", node(testNode, map[string]string{NodeDirAnnotation: ""}), DefaultDir},
		{"relative annotation", node(testNode, map[string]string{NodeDirAnnotation: "mnt/fast"}), DefaultDir},
		{"node not cached", nil, DefaultDir},
		{"other node annotated", node("node-b", map[string]string{NodeDirAnnotation: "/mnt/b"}), DefaultDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(defaultClass())
			objs := []runtime.Object{basePVC()}
			if tt.node != nil {
				objs = append(objs, tt.node)
			}
			c := newController(t, client, objs...)
			if err := c.syncPVC(context.Background(), "app/data"); err != nil {
				t.Fatal(err)
			}
			pv, err := client.CoreV1().PersistentVolumes().Get(context.Background(), pvName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := pv.Annotations[provisionedByAnnotation]; got != Provisioner {
				t.Errorf("provisioned-by = %q", got)
			}
			if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.Cmp(resource.MustParse("2Gi")) != 0 {
				t.Errorf("capacity = %s", q.String())
			}
			if !slices.Equal(pv.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
				t.Errorf("access modes = %v", pv.Spec.AccessModes)
			}
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
				t.Errorf("reclaim = %s", pv.Spec.PersistentVolumeReclaimPolicy)
			}
			if pv.Spec.StorageClassName != StorageClass {
				t.Errorf("class = %q", pv.Spec.StorageClassName)
			}
			ref := pv.Spec.ClaimRef
			if ref == nil || ref.Namespace != "app" || ref.Name != "data" || ref.UID != testUID || ref.Kind != "PersistentVolumeClaim" {
				t.Errorf("claimRef = %+v", ref)
			}
			hp := pv.Spec.HostPath
			if hp == nil {
				t.Fatal("no hostPath")
			}
			if want := tt.wantDir + "/" + pvName() + "_app_data"; hp.Path != want {
				t.Errorf("hostPath = %q, want %q", hp.Path, want)
			}
			if hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("hostPath type = %v", hp.Type)
			}
			if got := volumeNode(pv); got != testNode {
				t.Errorf("volumeNode = %q", got)
			}
			e := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0]
			if e.Key != hostnameLabel || e.Operator != corev1.NodeSelectorOpIn || !slices.Equal(e.Values, []string{testNode}) {
				t.Errorf("node affinity = %+v", e)
			}
		})
	}
}

func TestSyncPVCUsesClassReclaimPolicy(t *testing.T) {
	class := defaultClass()
	retain := corev1.PersistentVolumeReclaimRetain
	class.ReclaimPolicy = &retain
	client := fake.NewClientset(class)
	c := newController(t, client, basePVC())
	if err := c.syncPVC(context.Background(), "app/data"); err != nil {
		t.Fatal(err)
	}
	pvs := createdPVs(t, client)
	if len(pvs) != 1 || pvs[0].Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("pvs = %+v", pvs)
	}

	// A class without a policy means Delete.
	class.ReclaimPolicy = nil
	client = fake.NewClientset(class)
	c = newController(t, client, basePVC())
	if err := c.syncPVC(context.Background(), "app/data"); err != nil {
		t.Fatal(err)
	}
	pvs = createdPVs(t, client)
	if len(pvs) != 1 || pvs[0].Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Fatalf("pvs = %+v", pvs)
	}
}

func TestSyncPVCSkips(t *testing.T) {
	otherClass := "fast"
	block := corev1.PersistentVolumeBlock
	filesystem := corev1.PersistentVolumeFilesystem
	now := metav1.NewTime(time.Now())
	existingPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName()}}
	tests := []struct {
		name    string
		mutate  func(*corev1.PersistentVolumeClaim)
		cached  []runtime.Object
		wantErr bool
		wantPV  bool
	}{
		{name: "no selected node", mutate: func(p *corev1.PersistentVolumeClaim) { p.Annotations = nil }},
		{name: "empty selected node", mutate: func(p *corev1.PersistentVolumeClaim) { p.Annotations[selectedNodeAnnotation] = "" }},
		{name: "other class", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.StorageClassName = &otherClass }},
		{name: "no class", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.StorageClassName = nil }},
		{name: "already bound", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.VolumeName = "somepv" }},
		{name: "bound phase", mutate: func(p *corev1.PersistentVolumeClaim) { p.Status.Phase = corev1.ClaimBound }},
		{name: "lost phase", mutate: func(p *corev1.PersistentVolumeClaim) { p.Status.Phase = corev1.ClaimLost }},
		{name: "empty phase", mutate: func(p *corev1.PersistentVolumeClaim) { p.Status.Phase = "" }},
		{name: "being deleted", mutate: func(p *corev1.PersistentVolumeClaim) { p.DeletionTimestamp = &now }},
		{name: "block mode", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.VolumeMode = &block }},
		{name: "pv already cached", mutate: func(*corev1.PersistentVolumeClaim) {}, cached: []runtime.Object{existingPV}},
		{name: "no storage request", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.Resources.Requests = nil }, wantErr: true},
		{name: "explicit filesystem mode provisions", mutate: func(p *corev1.PersistentVolumeClaim) { p.Spec.VolumeMode = &filesystem }, wantPV: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(defaultClass())
			pvc := basePVC()
			tt.mutate(pvc)
			c := newController(t, client, append([]runtime.Object{pvc}, tt.cached...)...)
			err := c.syncPVC(context.Background(), "app/data")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got := len(createdPVs(t, client)); (got == 1) != tt.wantPV || got > 1 {
				t.Errorf("%d PVs created, want PV: %v", got, tt.wantPV)
			}
		})
	}
}

func TestSyncPVCMissingClaim(t *testing.T) {
	client := fake.NewClientset(defaultClass())
	c := newController(t, client)
	if err := c.syncPVC(context.Background(), "app/gone"); err != nil {
		t.Fatal(err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("%d API calls for a missing claim: %v", n, client.Actions())
	}
}

func TestSyncPVCErrors(t *testing.T) {
	t.Run("no storage class", func(t *testing.T) {
		client := fake.NewClientset()
		c := newController(t, client, basePVC())
		if err := c.syncPVC(context.Background(), "app/data"); !apierrors.IsNotFound(err) {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
	t.Run("create fails", func(t *testing.T) {
		client := fake.NewClientset(defaultClass())
		client.PrependReactor("create", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewInternalError(io.ErrUnexpectedEOF)
		})
		c := newController(t, client, basePVC())
		if err := c.syncPVC(context.Background(), "app/data"); err == nil {
			t.Fatal("want error")
		}
	})
	t.Run("already exists in API but not cache", func(t *testing.T) {
		client := fake.NewClientset(defaultClass(), &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName()}})
		c := newController(t, client, basePVC())
		if err := c.syncPVC(context.Background(), "app/data"); err != nil {
			t.Fatalf("err = %v, want nil on AlreadyExists", err)
		}
	})
}

func TestVolumeNode(t *testing.T) {
	term := func(exprs ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: exprs}
	}
	pv := func(terms ...corev1.NodeSelectorTerm) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{
			Required: &corev1.NodeSelector{NodeSelectorTerms: terms},
		}}}
	}
	in := func(key string, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
	}
	tests := []struct {
		name string
		pv   *corev1.PersistentVolume
		want string
	}{
		{"no affinity", &corev1.PersistentVolume{}, ""},
		{"no required", &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{}}}, ""},
		{"no terms", pv(), ""},
		{"empty term", pv(term()), ""},
		{"hostname", pv(term(in(hostnameLabel, "n1"))), "n1"},
		{"other key", pv(term(in("zone", "z1"))), ""},
		{"several values", pv(term(in(hostnameLabel, "n1", "n2"))), ""},
		{"no values", pv(term(in(hostnameLabel))), ""},
		{"second expression", pv(term(in("zone", "z1"), in(hostnameLabel, "n2"))), "n2"},
		{"second term", pv(term(in("zone", "z1")), term(in(hostnameLabel, "n3"))), "n3"},
		{"first match wins", pv(term(in(hostnameLabel, "n1")), term(in(hostnameLabel, "n2"))), "n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := volumeNode(tt.pv); got != tt.want {
				t.Errorf("volumeNode = %q, want %q", got, tt.want)
			}
		})
	}
}

func releasedPV() *corev1.PersistentVolume {
	dirType := corev1.HostPathDirectoryOrCreate
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName(), Annotations: map[string]string{provisionedByAnnotation: Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              StorageClass,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: "/mnt/fast/" + pvName() + "_app_data", Type: &dirType,
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: hostnameLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{testNode}}},
			}}}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeReleased},
	}
}

func helperName() string { return "local-path-delete-" + pvName() }

func TestSyncPVCreatesHelper(t *testing.T) {
	ctx := context.Background()
	pv := releasedPV()
	client := fake.NewClientset(pv)
	c := newController(t, client, pv)
	if err := c.syncPV(ctx, pv.Name); err != nil {
		t.Fatal(err)
	}
	p, err := client.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, helperName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels["skiff.dev/local-path-helper"] != pv.Name {
		t.Errorf("labels = %v", p.Labels)
	}
	if p.Spec.NodeName != testNode {
		t.Errorf("nodeName = %q", p.Spec.NodeName)
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %q", p.Spec.RestartPolicy)
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %v", p.Spec.AutomountServiceAccountToken)
	}
	if len(p.Spec.Tolerations) != 1 || p.Spec.Tolerations[0].Operator != corev1.TolerationOpExists || p.Spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations = %+v", p.Spec.Tolerations)
	}
	if len(p.Spec.Containers) != 1 {
		t.Fatalf("containers = %+v", p.Spec.Containers)
	}
	ctr := p.Spec.Containers[0]
	if ctr.Image != "img" || ctr.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image = %q pull = %q", ctr.Image, ctr.ImagePullPolicy)
	}
	if want := []string{"/bin/rm", "-rf", "/parent/" + pvName() + "_app_data"}; !slices.Equal(ctr.Command, want) {
		t.Errorf("command = %q, want %q", ctr.Command, want)
	}
	if len(ctr.VolumeMounts) != 1 || ctr.VolumeMounts[0].MountPath != "/parent" || ctr.VolumeMounts[0].Name != "parent" {
		t.Errorf("mounts = %+v", ctr.VolumeMounts)
	}
	if len(p.Spec.Volumes) != 1 || p.Spec.Volumes[0].Name != "parent" || p.Spec.Volumes[0].HostPath == nil ||
		p.Spec.Volumes[0].HostPath.Path != "/mnt/fast" {
		t.Errorf("volumes = %+v", p.Spec.Volumes)
	}
	// The PV stays until the helper has succeeded.
	if _, err := client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("PV gone before clean-up: %v", err)
	}

	// A second sync while the helper runs changes nothing.
	before := len(client.Actions())
	if err := c.syncPV(ctx, pv.Name); err != nil {
		t.Fatal(err)
	}
	for _, a := range client.Actions()[before:] {
		if a.GetVerb() != "get" {
			t.Errorf("unexpected %s %s while helper runs", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestSyncPVHelperFinished(t *testing.T) {
	tests := []struct {
		name         string
		phase        corev1.PodPhase
		wantErr      bool
		wantPVGone   bool
		wantPodGone  bool
		pvInAPI      bool
		deletePodErr bool
	}{
		{name: "succeeded", phase: corev1.PodSucceeded, wantPVGone: true, wantPodGone: true, pvInAPI: true},
		{name: "succeeded, pv already gone", phase: corev1.PodSucceeded, wantPVGone: true, wantPodGone: true},
		{name: "failed", phase: corev1.PodFailed, wantErr: true, wantPodGone: true, pvInAPI: true},
		{name: "running", phase: corev1.PodRunning, pvInAPI: true},
		{name: "pending", phase: corev1.PodPending, pvInAPI: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			pv := releasedPV()
			helper := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: helperName(), Namespace: metav1.NamespaceSystem},
				Status:     corev1.PodStatus{Phase: tt.phase},
			}
			objs := []runtime.Object{helper}
			if tt.pvInAPI {
				objs = append(objs, pv)
			}
			client := fake.NewClientset(objs...)
			c := newController(t, client, pv)
			err := c.syncPV(ctx, pv.Name)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr && !strings.Contains(err.Error(), testNode) {
				t.Errorf("error %q does not name the node", err)
			}
			_, err = client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if gone := apierrors.IsNotFound(err); gone != tt.wantPVGone {
				t.Errorf("PV gone = %v (err %v), want %v", gone, err, tt.wantPVGone)
			}
			_, err = client.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, helperName(), metav1.GetOptions{})
			if gone := apierrors.IsNotFound(err); gone != tt.wantPodGone {
				t.Errorf("helper gone = %v (err %v), want %v", gone, err, tt.wantPodGone)
			}
		})
	}
}

func TestSyncPVIgnores(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*corev1.PersistentVolume)
	}{
		{"not ours", func(pv *corev1.PersistentVolume) { pv.Annotations = nil }},
		{"other provisioner", func(pv *corev1.PersistentVolume) { pv.Annotations[provisionedByAnnotation] = "rancher.io/local-path" }},
		{"retain", func(pv *corev1.PersistentVolume) {
			pv.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
		}},
		{"bound", func(pv *corev1.PersistentVolume) { pv.Status.Phase = corev1.VolumeBound }},
		{"available", func(pv *corev1.PersistentVolume) { pv.Status.Phase = corev1.VolumeAvailable }},
		{"failed", func(pv *corev1.PersistentVolume) { pv.Status.Phase = corev1.VolumeFailed }},
		{"not hostPath", func(pv *corev1.PersistentVolume) {
			pv.Spec.PersistentVolumeSource = corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/x"}}
		}},
		// Never delete what does not look like a directory this provisioner made.
		{"root path", func(pv *corev1.PersistentVolume) { pv.Spec.HostPath.Path = "/" }},
		{"top-level path", func(pv *corev1.PersistentVolume) { pv.Spec.HostPath.Path = "/var" }},
		{"relative path", func(pv *corev1.PersistentVolume) { pv.Spec.HostPath.Path = pvName() + "_app_data" }},
		{"foreign directory name", func(pv *corev1.PersistentVolume) { pv.Spec.HostPath.Path = "/mnt/fast/home" }},
		{"no node", func(pv *corev1.PersistentVolume) { pv.Spec.NodeAffinity = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pv := releasedPV()
			tt.mutate(pv)
			client := fake.NewClientset(pv)
			c := newController(t, client, pv)
			if err := c.syncPV(context.Background(), pv.Name); err != nil {
				t.Fatal(err)
			}
			if n := len(client.Actions()); n != 0 {
				t.Errorf("%d API calls, want none: %v", n, client.Actions())
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		client := fake.NewClientset()
		c := newController(t, client)
		if err := c.syncPV(context.Background(), "nope"); err != nil {
			t.Fatal(err)
		}
		if n := len(client.Actions()); n != 0 {
			t.Errorf("%d API calls, want none", n)
		}
	})
}

func TestSyncPVGetError(t *testing.T) {
	pv := releasedPV()
	client := fake.NewClientset(pv)
	client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	c := newController(t, client, pv)
	if err := c.syncPV(context.Background(), pv.Name); !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("err = %v, want ServiceUnavailable", err)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("helper created despite a failed lookup")
		}
	}
}

// TestClusterRoleCoversCode checks that every API call the controller makes
// (recorded by the fake client through a full provision / clean-up cycle,
// plus the informers' list/watch) is allowed by ClusterRole.
func TestClusterRoleCoversCode(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	if err := EnsureStorageClass(ctx, client); err != nil {
		t.Fatal(err)
	}
	c := newController(t, client, basePVC())
	if err := c.syncPVC(ctx, "app/data"); err != nil {
		t.Fatal(err)
	}
	pv := releasedPV()
	c = newController(t, client, pv)
	if err := c.syncPV(ctx, pv.Name); err != nil { // creates the helper
		t.Fatal(err)
	}
	p, err := client.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, helperName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodSucceeded
	if _, err := client.CoreV1().Pods(metav1.NamespaceSystem).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n := len(client.Actions())
	if err := c.syncPV(ctx, pv.Name); err != nil { // deletes volume and helper
		t.Fatal(err)
	}
	type access struct{ group, resource, verb string }
	var used []access
	for _, a := range client.Actions()[:n-2] { // leave out the test's own get/updateStatus
		used = append(used, access{a.GetResource().Group, a.GetResource().Resource, a.GetVerb()})
	}
	for _, a := range client.Actions()[n:] {
		used = append(used, access{a.GetResource().Group, a.GetResource().Resource, a.GetVerb()})
	}
	// The informers in Run.
	for _, r := range []string{"persistentvolumeclaims", "persistentvolumes", "nodes", "pods"} {
		used = append(used, access{"", r, "list"}, access{"", r, "watch"})
	}
	wantUsed := map[access]bool{
		{"storage.k8s.io", "storageclasses", "create"}: false,
		{"storage.k8s.io", "storageclasses", "get"}:    false,
		{"", "persistentvolumes", "create"}:            false,
		{"", "persistentvolumes", "delete"}:            false,
		{"", "pods", "create"}:                         false,
		{"", "pods", "get"}:                            false,
		{"", "pods", "delete"}:                         false,
	}
	role := ClusterRole()
	if role.Name != Identity {
		t.Errorf("role name = %q, want %q", role.Name, Identity)
	}
	allowed := func(a access) bool {
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, a.group) && slices.Contains(r.Resources, a.resource) && slices.Contains(r.Verbs, a.verb) {
				return true
			}
		}
		return false
	}
	for _, a := range used {
		if !allowed(a) {
			t.Errorf("ClusterRole does not allow %s %s/%s", a.verb, a.group, a.resource)
		}
		if _, ok := wantUsed[a]; ok {
			wantUsed[a] = true
		}
	}
	for a, seen := range wantUsed {
		if !seen {
			t.Errorf("expected the code to %s %s/%s (test setup broken?)", a.verb, a.group, a.resource)
		}
	}
}
