package agent

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// TestPodSpecFeatures: init containers in order, securityContext (user,
// group, read-only root, no privilege escalation, dropped capabilities),
// env from the downward API, emptyDir in memory, downwardAPI volume.
func TestPodSpecFeatures(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	mem := resource.MustParse("16Mi")
	demoPod(t, ns, "features", func(p *v1.Pod) {
		p.Labels["tier"] = "demo"
		for _, n := range []string{"init-a", "init-b"} {
			p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{
				Name: n, Image: demoImage, ImagePullPolicy: v1.PullNever, Args: []string{"--exit-after=10ms", "--exit-code=0"},
			})
		}
		c := &p.Spec.Containers[0]
		c.SecurityContext = &v1.SecurityContext{
			RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(3000)), RunAsNonRoot: ptr(true),
			ReadOnlyRootFilesystem: ptr(true), AllowPrivilegeEscalation: ptr(false),
			Capabilities: &v1.Capabilities{Drop: []v1.Capability{"ALL"}},
		}
		c.Env = append(c.Env, v1.EnvVar{Name: "MY_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}})
		c.VolumeMounts = []v1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}, {Name: "info", MountPath: "/etc/podinfo"}}
		p.Spec.Volumes = []v1.Volume{
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory, SizeLimit: &mem}}},
			{Name: "info", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			}}}},
		}
	})
	p := waitPod(t, ns, "features", 90*time.Second, "running after its init containers", running)
	if len(p.Status.InitContainerStatuses) != 2 {
		t.Fatalf("init container statuses %+v", p.Status.InitContainerStatuses)
	}
	var finished []time.Time
	for _, s := range p.Status.InitContainerStatuses {
		term := s.State.Terminated
		if term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Fatalf("init container %s: %+v", s.Name, s.State)
		}
		finished = append(finished, term.FinishedAt.Time)
	}
	if p.Status.InitContainerStatuses[1].State.Terminated.StartedAt.Before(&metav1.Time{Time: finished[0]}) {
		t.Fatalf("init-b started before init-a finished")
	}
	body := httpGet(t, "http://"+p.Status.PodIP+":8080/")
	testserver.MustContain(t, body, "uid: 1000 gid: 3000")
	if got, err := readFileInPod(t, ns, "features", "/etc/podinfo/..data/labels"); err != nil || !strings.Contains(got, `tier="demo"`) {
		t.Fatalf("downwardAPI labels: %q (%v)", got, err)
	}
	// The root filesystem is read-only; the memory emptyDir is writable.
	src := t.TempDir() + "/f"
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "cp", src, "features:/scratch/f")
	if _, stderr, err := shared.Kubectl(t, "", "-n", ns, "cp", src, "features:/f"); err == nil && !strings.Contains(strings.ToLower(stderr), "read-only") {
		t.Fatalf("writing to the read-only root succeeded (stderr %q)", stderr)
	}
	pod, err := admin(t).CoreV1().Pods(ns).Get(context.Background(), "features", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.QOSClass != v1.PodQOSBestEffort {
		t.Fatalf("qosClass %s", pod.Status.QOSClass)
	}
}
