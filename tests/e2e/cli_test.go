package e2e

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// TestLogVerbosity: -v N reaches the embedded components through klog (the
// API server's request log is V(3)) and stays in force after the
// controller manager applies its own flags; a bad level is a clear error.
func TestLogVerbosity(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(skiffBin, "server", "-v", "-1", "--data-dir", t.TempDir(), "--disable-agent").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-v -1: want a level of 0 or more") {
		t.Fatalf("skiff server -v -1: err %v, output %s", err, out)
	}

	s, err := testserver.StartServer(skiffBin, filepath.Join(t.TempDir(), "verbose"), "--v=3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// A namespace's default ServiceAccount comes from the controller
	// manager: once it exists, the controller manager has started.
	s.Namespace(t)
	const probe = "/api/v1/namespaces/default/configmaps/verbosity-probe"
	if _, _, err := s.Kubectl(t, "", "get", "--raw", probe); err == nil {
		t.Fatal("GET of a missing ConfigMap succeeded")
	}
	// klog's V(n) is slog.Level(-n): V(3) prints as DEBUG+1.
	v3 := "level=" + slog.Level(-3).String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(s.Log)
		var found bool
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, probe) && strings.Contains(line, v3) {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no V(3) request log line for %s in the server log:\n%s", probe, s.Tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The default server logs no V-levels.
	b, err := os.ReadFile(shared.Log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "level=DEBUG") {
		t.Fatalf("the shared server (no -v) logged V-level messages")
	}
}

// TestKubectlTranslationsOnlyInKubectl: kubectl's translation catalog
// (loaded by k8s.io/kubectl/pkg/cmd/options's package variables) loads in
// `skiff kubectl` only, which depends on cmd/skiff/internal/kubectli18n
// initialising first (Go's package initialisation order).
func TestKubectlTranslationsOnlyInKubectl(t *testing.T) {
	t.Parallel()
	optionsInitBytes := func(args ...string) int {
		cmd := exec.Command(skiffBin, args...)
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		// init k8s.io/kubectl/pkg/cmd/options @117 ms, 25 ms clock, 4386424 bytes, 14120 allocs
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) > 8 && f[0] == "init" && f[1] == "k8s.io/kubectl/pkg/cmd/options" {
				n, err := strconv.Atoi(f[7])
				if err != nil {
					t.Fatalf("inittrace line %q: %v", line, err)
				}
				return n
			}
		}
		t.Fatalf("no inittrace line for kubectl's options package in:\n%s", out)
		return 0
	}
	if n := optionsInitBytes("--version"); n > 100<<10 {
		t.Errorf("skiff --version: kubectl's options package allocated %d bytes at init: translations loaded", n)
	}
	if n := optionsInitBytes("kubectl", "version", "--client"); n < 1<<20 {
		t.Errorf("skiff kubectl: kubectl's options package allocated only %d bytes at init: translations not loaded", n)
	}
}

// TestRelativeDataDir: a relative --data-dir works (the server writes
// kubeconfigs naming files under it; a relative path would be read
// relative to each kubeconfig's directory).
func TestRelativeDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(skiffBin, "server", "--data-dir", "data", "--https-listen-port", strconv.Itoa(port),
		"--bind-address", "127.0.0.1", "--write-kubeconfig", "kubeconfig.yaml", "--disable-agent")
	cmd.Dir = dir
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	kubeconfig := filepath.Join(dir, "kubeconfig.yaml")
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("server with a relative --data-dir exited: %v\n%s", waitErr, b[max(0, len(b)-3000):])
		default:
		}
		// The controller manager's default ServiceAccount shows it runs
		// with the credentials written under the data dir.
		out, _ := exec.Command(skiffBin, "kubectl", "--kubeconfig", kubeconfig, "get", "serviceaccount", "default", "-o", "name").Output()
		if strings.TrimSpace(string(out)) == "serviceaccount/default" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no default ServiceAccount 60 s after start with a relative --data-dir")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "server")); err != nil {
		t.Fatalf("state not under the relative data dir: %v", err)
	}
}

// TestAdaptiveGC: with $GOGC unset the server adapts its GC target to its
// live heap once ready (internal/gctune; an idle server's heap is far
// below the headroom budget, so it runs at the maximum, 100); a GOGC the
// user set is kept.
func TestAdaptiveGC(t *testing.T) {
	t.Parallel()
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOGC=") {
			env = append(env, e)
		}
	}
	start := func(name string, env []string) *testserver.Server {
		s, err := testserver.New(skiffBin, filepath.Join(t.TempDir(), name), "--debug")
		if err != nil {
			t.Fatal(err)
		}
		s.Env = env
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		return s
	}
	adaptive := start("adaptive", env)
	user := start("user", append(env[:len(env):len(env)], "GOGC=75"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(adaptive.Log)
		if strings.Contains(string(b), `msg="GC target" GOGC=100`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `GC target GOGC=100` debug line in the server log:\n%s", adaptive.Tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The tuner's first line comes before the server writes its
	// kubeconfig, which Start waited for.
	if b, _ := os.ReadFile(user.Log); strings.Contains(string(b), `msg="GC target"`) {
		t.Fatalf("the server with GOGC=75 set its own GC target:\n%s", user.Tail())
	}
}
