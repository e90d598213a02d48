package agent

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/skiff-sh/skiff/tests/testserver"
)

func TestNodeRegistered(t *testing.T) {
	setup(t)
	n, err := admin(t).CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		t.Fatalf("node not Ready: %+v", n.Status.Conditions)
	}
	for k, want := range map[string]string{
		"node-role.kubernetes.io/control-plane": "true",
		"kubernetes.io/hostname":                nodeName,
		"kubernetes.io/os":                      "linux",
	} {
		if n.Labels[k] != want {
			t.Errorf("label %s=%q, want %q", k, n.Labels[k], want)
		}
	}
	if n.Spec.PodCIDR == "" || !strings.HasPrefix(n.Spec.PodCIDR, "10.42.") || !strings.HasSuffix(n.Spec.PodCIDR, "/24") {
		t.Errorf("podCIDR %q, want a /24 of 10.42.0.0/16", n.Spec.PodCIDR)
	}
	if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://2.") {
		t.Errorf("container runtime %q", n.Status.NodeInfo.ContainerRuntimeVersion)
	}
	if n.Status.Capacity.Pods().Value() != 110 || n.Status.Capacity.Cpu().IsZero() || n.Status.Capacity.Memory().IsZero() {
		t.Errorf("capacity %v", n.Status.Capacity)
	}
	internal := ""
	for _, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			internal = a.Address
		}
	}
	if internal == "" {
		t.Errorf("no InternalIP in %v", n.Status.Addresses)
	}
}

func TestDeploymentRunsRealContainers(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	kubectl(t, "-n", ns, "create", "deployment", "demo", "--image="+demoImage, "--replicas=3")
	kubectl(t, "-n", ns, "rollout", "status", "deployment/demo", "--timeout=90s")
	pods, err := admin(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=demo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("%d pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Status.Phase != v1.PodRunning || p.Status.PodIP == "" || p.Status.HostIP == "" || p.Status.StartTime == nil || p.Status.QOSClass != v1.PodQOSBestEffort {
			t.Fatalf("pod %s status %+v", p.Name, p.Status)
		}
		cs := p.Status.ContainerStatuses[0]
		if st := taskStatus(t, cs.ContainerID); st != "running" {
			t.Fatalf("pod %s container %s is %q in containerd", p.Name, cs.ContainerID, st)
		}
		if cs.ImageID == "" || !cs.Ready || cs.State.Running == nil {
			t.Fatalf("container status %+v", cs)
		}
		// The pod answers on its own IP from the host.
		body := httpGet(t, "http://"+p.Status.PodIP+":8080/")
		testserver.MustContain(t, body, "pod: "+p.Name, "ip: "+p.Status.PodIP)
	}
	// One runc shim serves every pod of the node (--shim-grouping node,
	// the default; the second node runs one per pod).
	shims := map[int]bool{}
	for _, p := range pods.Items {
		shims[shimOf(t, runDir, p.Status.ContainerStatuses[0].ContainerID)] = true
	}
	if len(shims) != 1 {
		t.Fatalf("3 pods are served by shims %v, want one node-wide shim", shims)
	}
	// Deleting a pod stops its container in the runtime.
	victim := pods.Items[0]
	kubectl(t, "-n", ns, "delete", "pod", victim.Name, "--wait=true", "--timeout=60s")
	if st := taskStatus(t, victim.Status.ContainerStatuses[0].ContainerID); st == "running" {
		t.Fatalf("deleted pod's container still running in containerd")
	}
}

func httpGet(t testing.TB, url string) string {
	t.Helper()
	var last error
	for i := 0; i < 20; i++ {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// demoPod creates a single-container demo pod and waits for Running.
func demoPod(t *testing.T, ns, name string, mutate func(*v1.Pod)) *v1.Pod {
	t.Helper()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(2)),
			Containers: []v1.Container{{
				Name: "demo", Image: demoImage, ImagePullPolicy: v1.PullNever,
				Env: []v1.EnvVar{{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
			}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	if _, err := admin(t).CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

func TestStreaming(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "stream", nil)
	p := waitPod(t, ns, "stream", 60*time.Second, "running", running)

	// logs -f sees a line written after it started.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shared.Bin, "kubectl", "-n", ns, "logs", "-f", "--timestamps", "stream")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(time.Second)
	httpGet(t, "http://"+p.Status.PodIP+":8080/followed-request")
	found := false
	for !found {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("logs -f ended before the new line")
			}
			// --timestamps prefixes RFC3339Nano times.
			found = strings.Contains(l, "/followed-request") && regexp.MustCompile(`^\d{4}-\d\d-\d\dT`).MatchString(l)
		case <-ctx.Done():
			t.Fatal("logs -f did not show the request")
		}
	}
	cancel()
	_ = cmd.Wait()
	testserver.MustContain(t, kubectl(t, "-n", ns, "logs", "stream", "--tail=1"), "/followed-request")

	// exec without a terminal.
	// (flag usage goes to stderr)
	_, usage, _ := shared.Kubectl(t, "", "-n", ns, "exec", "stream", "--", "/demo", "-h")
	testserver.MustContain(t, usage, "burn-memory-mb")
	// exec with a pty (what `kubectl exec -it` asks for), over WebSocket.
	cfg := shared.RESTConfig(t)
	req := admin(t).CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("stream").SubResource("exec").
		VersionedParams(&v1.PodExecOptions{Container: "demo", Command: []string{"/demo", "-h"}, Stdout: true, TTY: true}, scheme.ParameterCodec)
	exe, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		t.Fatal(err)
	}
	var tty bytes.Buffer
	if err := exe.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: &tty, Tty: true}); err != nil && !strings.Contains(err.Error(), "exit code 2") {
		t.Fatalf("exec with tty: %v", err)
	}
	// A terminal turns \n into \r\n: proof the output went through a pty.
	testserver.MustContain(t, tty.String(), "burn-memory-mb", "\r\n")

	// port-forward, then HTTP through it.
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	pf := exec.CommandContext(pctx, shared.Bin, "kubectl", "-n", ns, "port-forward", "pod/stream", ":8080")
	pf.Env = append(os.Environ(), "KUBECONFIG="+shared.Kubeconfig)
	pout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pcancel(); _ = pf.Wait() }()
	line, err := bufio.NewReader(pout).ReadString('\n')
	if err != nil {
		t.Fatalf("port-forward: %v", err)
	}
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+) -> 8080`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("port-forward said %q", line)
	}
	testserver.MustContain(t, httpGet(t, "http://127.0.0.1:"+m[1]+"/via-port-forward"), "pod: stream", "/via-port-forward")

	// cp both ways.
	src := t.TempDir() + "/in.txt"
	if err := os.WriteFile(src, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "cp", src, "stream:/tmp/in.txt")
	dst := t.TempDir() + "/out.txt"
	kubectl(t, "-n", ns, "cp", "stream:/tmp/in.txt", dst)
	if b, err := os.ReadFile(dst); err != nil || string(b) != "copied in\n" {
		t.Fatalf("cp round trip: %q, %v", b, err)
	}
}

func TestLivenessProbeRestarts(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "liveness", func(p *v1.Pod) {
		c := &p.Spec.Containers[0]
		c.Args = []string{"--fail-healthz-after=2s"}
		c.LivenessProbe = &v1.Probe{
			ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1, FailureThreshold: 1,
		}
	})
	p := waitPod(t, ns, "liveness", 90*time.Second, "restarted by its liveness probe", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	if p.Status.ContainerStatuses[0].LastTerminationState.Terminated == nil {
		t.Fatalf("no lastState.terminated: %+v", p.Status.ContainerStatuses[0])
	}
	ev := kubectl(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=liveness")
	testserver.MustContain(t, ev, "Unhealthy", "Liveness probe failed", "Killing")
}

func TestCrashLoopBackOff(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "crash", func(p *v1.Pod) {
		p.Spec.Containers[0].Args = []string{"--exit-after=100ms", "--exit-code=3"}
	})
	p := waitPod(t, ns, "crash", 90*time.Second, "in CrashLoopBackOff", func(p *v1.Pod) bool {
		if len(p.Status.ContainerStatuses) != 1 {
			return false
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" && cs.RestartCount >= 1
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 3 || last.Reason != "Error" {
		t.Fatalf("lastState.terminated = %+v, want exit code 3, reason Error", last)
	}
	testserver.MustContain(t, kubectl(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=crash"), "BackOff", "Back-off restarting failed container")
}

func TestMemoryLimitOOMKilled(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	demoPod(t, ns, "oom", func(p *v1.Pod) {
		c := &p.Spec.Containers[0]
		c.Args = []string{"--burn-memory-mb=200"}
		c.Resources = v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi"), v1.ResourceCPU: resource.MustParse("500m")},
		}
		p.Spec.RestartPolicy = v1.RestartPolicyNever
	})
	p := waitPod(t, ns, "oom", 90*time.Second, "OOMKilled", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil
	})
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Fatalf("terminated %+v, want OOMKilled with 137", term)
	}
	if p.Status.QOSClass != v1.PodQOSGuaranteed {
		t.Fatalf("qosClass %s, want Guaranteed (limits only → requests = limits)", p.Status.QOSClass)
	}
}

// readFileInPod reads a file through the image's tar (kubectl cp's path).
func readFileInPod(t *testing.T, ns, pod, path string) (string, error) {
	out, _, err := shared.Kubectl(t, "", "-n", ns, "exec", pod, "--", "tar", "cf", "-", path)
	if err != nil {
		return "", err
	}
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s not in tar: %w", path, err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

func TestConfigMapAndSecretVolumesUpdate(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	kubectl(t, "-n", ns, "create", "configmap", "cfg", "--from-literal=greeting=hello")
	kubectl(t, "-n", ns, "create", "secret", "generic", "sec", "--from-literal=password=first")
	demoPod(t, ns, "vols", func(p *v1.Pod) {
		p.Spec.Volumes = []v1.Volume{
			{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
			{Name: "sec", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec"}}},
		}
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg"}, {Name: "sec", MountPath: "/etc/sec"}}
	})
	waitPod(t, ns, "vols", 60*time.Second, "running", running)
	// The files are symlinks into ..data, which the kubelet swaps atomically.
	for path, want := range map[string]string{"/etc/cfg/..data/greeting": "hello", "/etc/sec/..data/password": "first"} {
		if got, err := readFileInPod(t, ns, "vols", path); err != nil || got != want {
			t.Fatalf("%s = %q (%v), want %q", path, got, err, want)
		}
	}
	shared.MustKubectl(t, "", "-n", ns, "patch", "configmap", "cfg", "-p", `{"data":{"greeting":"updated"}}`)
	shared.MustKubectl(t, "", "-n", ns, "patch", "secret", "sec", "-p", `{"stringData":{"password":"second"}}`)
	deadline := time.Now().Add(90 * time.Second)
	for path, want := range map[string]string{"/etc/cfg/..data/greeting": "updated", "/etc/sec/..data/password": "second"} {
		for {
			got, err := readFileInPod(t, ns, "vols", path)
			if err == nil && got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still %q (%v), want %q", path, got, err, want)
			}
			time.Sleep(time.Second)
		}
	}
}

func TestAirgapImageImported(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "airgap", Namespace: ns},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: airgapImage, ImagePullPolicy: v1.PullNever}}},
	}
	if _, err := admin(t).CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "airgap", 60*time.Second, "running from the imported tarball", running)
}
