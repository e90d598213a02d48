package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// The test registry (Debian's docker-registry, distribution v2) on
// loopback, with basic auth. registries.yaml gives the agent its
// credentials for 127.0.0.1:<port> and a mirror name; "localhost:<port>"
// (the same registry under another name) has no configured credentials.
const (
	regUser   = "skiff"
	regPass   = "s3cret-pass"
	mirrorReg = "mirror.skiff.test"
)

type registry struct {
	port int
	cmd  *exec.Cmd
	err  string // why there is none
}

var reg registry

// startRegistry starts the registry and writes registries.yaml into
// configDir. Called from TestMain before the server starts.
func startRegistry(tmp, configDir string) error {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		reg.err = "needs Debian's docker-registry package for a real registry (apt-get install docker-registry)"
		return nil
	}
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		reg.err = "needs htpasswd (apt-get install apache2-utils) for the registry's basic auth"
		return nil
	}
	port, err := testserver.FreePort()
	if err != nil {
		return err
	}
	dir := filepath.Join(tmp, "registry")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	out, err := exec.Command(htpasswd, "-Bbn", regUser, regPass).Output()
	if err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: %s/data}
  delete: {enabled: true}
http: {addr: "127.0.0.1:%d"}
auth:
  htpasswd: {realm: skiff-test, path: %s/htpasswd}
`, dir, port, dir)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	reg.port, reg.cmd = port, cmd
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/", port)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	yaml := fmt.Sprintf(`mirrors:
  %s:
    endpoint: ["http://127.0.0.1:%d"]
configs:
  "127.0.0.1:%d":
    auth: {username: %s, password: %s}
`, mirrorReg, port, port, regUser, regPass)
	if err := os.MkdirAll(configDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(configDir, "registries.yaml"), []byte(yaml), 0o600)
}

func stopRegistry() {
	if reg.cmd != nil && reg.cmd.ProcessState == nil {
		_ = reg.cmd.Process.Kill()
		_ = reg.cmd.Wait()
	}
}

// push copies the node's air-gap image into the registry as repo:tag. Not
// the demo image: the kubelet (KubeletEnsureSecretPulledImages) tracks
// credentials per image digest, so once a pod pulled a digest with a pull
// secret, pods without it may no longer use that digest with
// imagePullPolicy Never — which the other tests do with the demo image.
func push(t *testing.T, repoTag string) {
	t.Helper()
	cl, ctx := runtimeClient(t)
	img, err := cl.GetImage(ctx, airgapImage)
	if err != nil {
		t.Fatal(err)
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(
		docker.WithPlainHTTP(docker.MatchAllHosts),
		docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(func(string) (string, string, error) { return regUser, regPass, nil }))),
	)})
	if err := cl.Push(ctx, repoTag, img.Target(), containerd.WithResolver(resolver)); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

func registryPod(t *testing.T, ns, name, image string, policy v1.PullPolicy, secret string) {
	t.Helper()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers:                    []v1.Container{{Name: "c", Image: image, ImagePullPolicy: policy}},
		},
	}
	if secret != "" {
		p.Spec.ImagePullSecrets = []v1.LocalObjectReference{{Name: secret}}
	}
	if _, err := admin(t).CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func pullFailed(p *v1.Pod) bool {
	if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
		return false
	}
	r := p.Status.ContainerStatuses[0].State.Waiting.Reason
	return r == "ErrImagePull" || r == "ImagePullBackOff"
}

func TestRegistryPulls(t *testing.T) {
	setup(t)
	if reg.err != "" {
		t.Skip(reg.err)
	}
	ns := shared.Namespace(t)
	local := fmt.Sprintf("localhost:%d/skiff/demo:%s", reg.port, strings.ToLower(ns[len(ns)-4:]))
	push(t, fmt.Sprintf("127.0.0.1:%d/skiff/demo:v1", reg.port))
	push(t, local)

	t.Run("credentials from registries.yaml", func(t *testing.T) {
		registryPod(t, ns, "configured", fmt.Sprintf("127.0.0.1:%d/skiff/demo:v1", reg.port), v1.PullAlways, "")
		waitPod(t, ns, "configured", 90*time.Second, "running from the registry", running)
	})
	t.Run("mirror from registries.yaml", func(t *testing.T) {
		registryPod(t, ns, "mirrored", mirrorReg+"/skiff/demo:v1", v1.PullAlways, "")
		waitPod(t, ns, "mirrored", 90*time.Second, "running through the mirror", running)
	})
	t.Run("no credentials", func(t *testing.T) {
		registryPod(t, ns, "anonymous", local, v1.PullAlways, "")
		p := waitPod(t, ns, "anonymous", 90*time.Second, "failing to pull without credentials", pullFailed)
		testserver.MustContain(t, p.Status.ContainerStatuses[0].State.Waiting.Message+kubectl(t, "-n", ns, "get", "events"), "authorization failed")
	})
	t.Run("imagePullSecrets", func(t *testing.T) {
		kubectl(t, "-n", ns, "create", "secret", "docker-registry", "regcred",
			fmt.Sprintf("--docker-server=localhost:%d", reg.port), "--docker-username="+regUser, "--docker-password="+regPass)
		registryPod(t, ns, "with-secret", local, v1.PullAlways, "regcred")
		waitPod(t, ns, "with-secret", 90*time.Second, "running with imagePullSecrets", running)
	})
	t.Run("registry gone, image present", func(t *testing.T) {
		stopRegistry()
		// The same pull secret: the kubelet (KubeletEnsureSecretPulledImages)
		// re-checks credentials for pods that did not pull an image themselves.
		registryPod(t, ns, "airgapped", local, v1.PullIfNotPresent, "regcred")
		waitPod(t, ns, "airgapped", 60*time.Second, "running from the present image with the registry down", running)
		registryPod(t, ns, "must-pull", local, v1.PullAlways, "regcred")
		waitPod(t, ns, "must-pull", 90*time.Second, "failing to pull with the registry down", pullFailed)
	})
}
