package agent

import (
	"context"
	"os"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// TestLocalPathVolume: a claim on the default StorageClass binds when its
// first pod is scheduled, its data survives the pod, and deleting the
// claim deletes the volume and its directory on the node.
func TestLocalPathVolume(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	cs := admin(t)
	ctx := context.Background()
	sc := kubectl(t, "get", "storageclass")
	testserver.MustContain(t, sc, "local-path (default)", "skiff.dev/local-path", "WaitForFirstConsumer")

	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	withVolume := func(p *v1.Pod) {
		p.Spec.Volumes = []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	demoPod(t, ns, "writer", withVolume)
	waitPod(t, ns, "writer", 90*time.Second, "running with its volume", running)
	src := t.TempDir() + "/note.txt"
	if err := os.WriteFile(src, []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "cp", src, "writer:/data/note.txt")
	kubectl(t, "-n", ns, "delete", "pod", "writer", "--wait=true")

	demoPod(t, ns, "reader", withVolume)
	waitPod(t, ns, "reader", 90*time.Second, "running with the same volume", running)
	if got, err := readFileInPod(t, ns, "reader", "/data/note.txt"); err != nil || got != "kept\n" {
		t.Fatalf("data after pod deletion: %q (%v)", got, err)
	}
	bound, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, bound.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := pv.Spec.HostPath.Path
	if _, err := os.Stat(dir + "/note.txt"); err != nil {
		t.Fatalf("volume data not on the node at %s: %v", dir, err)
	}

	kubectl(t, "-n", ns, "delete", "pod", "reader", "--wait=true")
	kubectl(t, "-n", ns, "delete", "pvc", "data", "--wait=true")
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("volume %s not deleted after its claim: %v", pv.Name, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("volume directory %s still there (%v)", dir, err)
	}
}
