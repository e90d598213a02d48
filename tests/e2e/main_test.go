// Package e2e tests the real skiff binary: each test run starts `skiff
// server` on an ephemeral port with a fresh data directory and drives it with
// the embedded kubectl and with client-go.
package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// skiffBin is the binary under test.
var skiffBin string

// shared is the server most tests use.
var shared *testserver.Server

func TestMain(m *testing.M) {
	os.Exit(testserver.Main(m, "e2e", "../..", func(s *testserver.Server) { shared, skiffBin = s, s.Bin }))
}

// kubectl runs kubectl on the shared server and fails the test on error.
func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	return shared.MustKubectl(t, "", args...)
}

// kubectlIn is kubectl with standard input.
func kubectlIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	return shared.MustKubectl(t, stdin, args...)
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
	return shared.Namespace(t)
}

func mustContain(t testing.TB, got string, wants ...string) {
	t.Helper()
	testserver.MustContain(t, got, wants...)
}
