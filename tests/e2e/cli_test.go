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
