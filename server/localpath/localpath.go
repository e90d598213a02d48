// Package localpath is Skiff's in-process dynamic provisioner for node-local
// storage (what k3s ships as local-path-provisioner): the default
// StorageClass "local-path" binds WaitForFirstConsumer, and once the
// scheduler picks a node for a claim's first pod, this controller creates a
// hostPath PersistentVolume in the node's storage directory, pinned to the
// node by nodeAffinity. The kubelet creates the directory when it mounts
// the volume. When a volume with reclaimPolicy Delete is released, a
// short-lived helper pod on its node removes the data, then the volume is
// deleted.
//
// It is a client of the API like any operator, with its own identity.
package localpath

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const (
	// Provisioner is the StorageClass provisioner name.
	Provisioner = "skiff.dev/local-path"
	// StorageClass is the default class's name.
	StorageClass = "local-path"
	// NodeDirAnnotation on a Node names its storage directory (the agent
	// sets it); DefaultDir applies otherwise.
	NodeDirAnnotation = "skiff.dev/local-path-dir"
	DefaultDir        = "/var/lib/skiff/storage"

	selectedNodeAnnotation  = "volume.kubernetes.io/selected-node"
	provisionedByAnnotation = "pv.kubernetes.io/provisioned-by"
	hostnameLabel           = "kubernetes.io/hostname"
	helperNamespace         = metav1.NamespaceSystem
)

// Identity is the controller's user name; ClusterRole its permissions.
const Identity = "skiff:local-path-provisioner"

// ClusterRole is what the controller may do.
func ClusterRole() rbacv1.ClusterRole {
	return rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: Identity},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims", "nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch", "create"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		},
	}
}

// Config configures the controller.
type Config struct {
	Client kubernetes.Interface
	// HelperImage runs `rm -rf` for volume clean-up (present on every node).
	HelperImage string
	Logger      *slog.Logger
}

// EnsureStorageClass creates the default local-path StorageClass.
func EnsureStorageClass(ctx context.Context, client kubernetes.Interface) error {
	mode := storagev1.VolumeBindingWaitForFirstConsumer
	reclaim := corev1.PersistentVolumeReclaimDelete
	_, err := client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClass, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true",
		}},
		Provisioner:       Provisioner,
		VolumeBindingMode: &mode,
		ReclaimPolicy:     &reclaim,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

type controller struct {
	Config
	pvcs  cache.Indexer
	pvs   cache.Indexer
	nodes cache.Indexer
	queue workqueue.TypedRateLimitingInterface[string]
}

// Run runs the controller until ctx ends.
func Run(ctx context.Context, c Config) error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		err := EnsureStorageClass(ctx, c.Client)
		if err != nil {
			c.Logger.Warn("cannot create the local-path StorageClass yet", "err", err)
		}
		return err == nil, nil
	}); err != nil {
		return nil
	}
	f := informers.NewSharedInformerFactory(c.Client, 10*time.Minute)
	ctl := &controller{
		Config: c,
		pvcs:   f.Core().V1().PersistentVolumeClaims().Informer().GetIndexer(),
		pvs:    f.Core().V1().PersistentVolumes().Informer().GetIndexer(),
		nodes:  f.Core().V1().Nodes().Informer().GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "local-path"}),
	}
	enqueue := func(prefix string) cache.ResourceEventHandlerFuncs {
		add := func(obj any) {
			if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
				ctl.queue.Add(prefix + key)
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, o any) { add(o) }}
	}
	if _, err := f.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(enqueue("pvc/")); err != nil {
		return err
	}
	if _, err := f.Core().V1().PersistentVolumes().Informer().AddEventHandler(enqueue("pv/")); err != nil {
		return err
	}
	// Helper pods finishing re-trigger their volume.
	podInformer := informers.NewSharedInformerFactoryWithOptions(c.Client, 10*time.Minute, informers.WithNamespace(helperNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "skiff.dev/local-path-helper" }))
	if _, err := podInformer.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, o any) {
			if p, ok := o.(*corev1.Pod); ok {
				ctl.queue.Add("pv/" + p.Labels["skiff.dev/local-path-helper"])
			}
		},
	}); err != nil {
		return err
	}
	f.StartWithContext(ctx)
	podInformer.StartWithContext(ctx)
	f.WaitForCacheSync(ctx.Done())
	podInformer.WaitForCacheSync(ctx.Done())
	defer ctl.queue.ShutDown()
	go func() {
		<-ctx.Done()
		ctl.queue.ShutDown()
	}()
	for {
		key, quit := ctl.queue.Get()
		if quit {
			return nil
		}
		var err error
		if key[:3] == "pv/" {
			err = ctl.syncPV(ctx, key[3:])
		} else {
			err = ctl.syncPVC(ctx, key[4:])
		}
		if err != nil && ctx.Err() == nil {
			c.Logger.Warn("local-path sync failed, retrying", "key", key, "err", err)
			ctl.queue.AddRateLimited(key)
		} else {
			ctl.queue.Forget(key)
		}
		ctl.queue.Done(key)
	}
}

func (c *controller) nodeDir(node string) string {
	if obj, ok, _ := c.nodes.GetByKey(node); ok {
		if d := obj.(*corev1.Node).Annotations[NodeDirAnnotation]; d != "" && path.IsAbs(d) {
			return d
		}
	}
	return DefaultDir
}

func (c *controller) syncPVC(ctx context.Context, key string) error {
	obj, ok, err := c.pvcs.GetByKey(key)
	if err != nil || !ok {
		return err
	}
	pvc := obj.(*corev1.PersistentVolumeClaim)
	node := pvc.Annotations[selectedNodeAnnotation]
	if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || node == "" ||
		pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != StorageClass || pvc.DeletionTimestamp != nil {
		return nil
	}
	name := "pvc-" + string(pvc.UID)
	if _, exists, _ := c.pvs.GetByKey(name); exists {
		return nil
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		c.Logger.Warn("local-path cannot provision block volumes", "pvc", key)
		return nil
	}
	size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return fmt.Errorf("claim %s requests no storage", key)
	}
	class, err := c.Client.StorageV1().StorageClasses().Get(ctx, StorageClass, metav1.GetOptions{})
	if err != nil {
		return err
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	dirType := corev1.HostPathDirectoryOrCreate
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedByAnnotation: Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              StorageClass,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: path.Join(c.nodeDir(node), fmt.Sprintf("%s_%s_%s", name, pvc.Namespace, pvc.Name)), Type: &dirType,
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: hostnameLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	c.Logger.Info("provisioned local-path volume", "pv", name, "pvc", key, "node", node)
	return nil
}

// volumeNode is the node a local-path volume lives on.
func volumeNode(pv *corev1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, t := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == hostnameLabel && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}

func (c *controller) syncPV(ctx context.Context, name string) error {
	obj, ok, err := c.pvs.GetByKey(name)
	if err != nil || !ok {
		return err
	}
	pv := obj.(*corev1.PersistentVolume)
	if pv.Annotations[provisionedByAnnotation] != Provisioner || pv.Status.Phase != corev1.VolumeReleased ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.HostPath == nil {
		return nil
	}
	node := volumeNode(pv)
	dir := pv.Spec.HostPath.Path
	// Only ever delete what this provisioner created: an absolute path
	// named after the volume, on one known node.
	if node == "" || !path.IsAbs(dir) || path.Dir(dir) == "/" || !strings.HasPrefix(path.Base(dir), pv.Name+"_") {
		c.Logger.Warn("not deleting the data of a local-path volume that does not look like ours", "pv", pv.Name, "path", dir, "node", node)
		return nil
	}
	helper := "local-path-delete-" + pv.Name
	pods := c.Client.CoreV1().Pods(helperNamespace)
	p, err := pods.Get(ctx, helper, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		dirType := corev1.HostPathDirectoryOrCreate
		_, err = pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: helper, Namespace: helperNamespace, Labels: map[string]string{"skiff.dev/local-path-helper": pv.Name}},
			Spec: corev1.PodSpec{
				NodeName:                     node,
				RestartPolicy:                corev1.RestartPolicyNever,
				AutomountServiceAccountToken: new(bool),
				Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{
					Name: "delete", Image: c.HelperImage, ImagePullPolicy: corev1.PullNever,
					Command:      []string{"/bin/rm", "-rf", "/parent/" + path.Base(dir)},
					VolumeMounts: []corev1.VolumeMount{{Name: "parent", MountPath: "/parent"}},
				}},
				Volumes: []corev1.Volume{{Name: "parent", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path.Dir(dir), Type: &dirType}}}},
			},
		}, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	case p.Status.Phase == corev1.PodSucceeded:
		if err := c.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		c.Logger.Info("deleted local-path volume and its data", "pv", pv.Name, "node", node)
		return pods.Delete(ctx, helper, metav1.DeleteOptions{})
	case p.Status.Phase == corev1.PodFailed:
		// Try again with a fresh helper.
		_ = pods.Delete(ctx, helper, metav1.DeleteOptions{})
		return fmt.Errorf("clean-up of %s on %s failed", pv.Name, node)
	}
	return nil
}
