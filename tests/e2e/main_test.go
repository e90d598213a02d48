// Package e2e tests the real skiff binary: each test run starts `skiff
// server` on an ephemeral port with a fresh data directory and drives it with
// the embedded kubectl and with client-go.
package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// skiffBin is the binary under test: $SKIFF_BIN, or one built into a
// temporary directory.
var skiffBin string

// shared is the server most tests use.
var shared *testserver.Server

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "skiff-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	skiffBin, err = testserver.Binary("../..", tmp)
	if err != nil {
		return 0, err
	}
	shared, err = testserver.StartServer(skiffBin, filepath.Join(tmp, "shared"))
	if err != nil {
		return 0, err
	}
	defer shared.Stop()
	return m.Run(), nil
}

// kubectl runs kubectl on the shared server and fails the test on error.
func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := shared.Kubectl(t, "", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// kubectlIn is kubectl with standard input.
func kubectlIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := shared.Kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// kubectlFail runs kubectl expecting failure and returns stderr.
func kubectlFail(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := shared.Kubectl(t, stdin, args...)
	if err == nil {
		t.Fatalf("kubectl %s succeeded, want failure\nstdout: %s", strings.Join(args, " "), out)
	}
	return errOut
}

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	// A suffix keeps repeated runs (-count) from meeting a terminating namespace.
	name = fmt.Sprintf("%s-%04x", strings.Trim(name, "-"), rand.IntN(1<<16))
	kubectl(t, "create", "namespace", name)
	t.Cleanup(func() { shared.Kubectl(t, "", "delete", "namespace", name, "--wait=false") })
	return name
}

func mustContain(t testing.TB, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("output does not contain %q:\n%s", w, got)
		}
	}
}
