// Package e2e tests the real skiff binary: each test run starts `skiff
// server` on an ephemeral port with a fresh data directory and drives it with
// the embedded kubectl and with client-go.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// skiffBin is the binary under test: $SKIFF_BIN, or one built into a
// temporary directory.
var skiffBin string

// shared is the server most tests use.
var shared *Server

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
	skiffBin = os.Getenv("SKIFF_BIN")
	if skiffBin == "" {
		skiffBin = filepath.Join(tmp, "skiff")
		fmt.Fprintln(os.Stderr, "e2e: SKIFF_BIN not set; building skiff (make e2e sets it)")
		cmd := exec.Command("go", "build", "-o", skiffBin, "../../cmd/skiff")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("build skiff: %w", err)
		}
	}
	shared, err = StartServer(filepath.Join(tmp, "shared"))
	if err != nil {
		return 0, err
	}
	defer shared.Stop()
	return m.Run(), nil
}

// Server is a running `skiff server` process.
type Server struct {
	DataDir    string
	Kubeconfig string
	Port       int
	Log        string
	cmd        *exec.Cmd
	exited     chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartServer starts skiff server with its state in dir and waits for the
// kubeconfig it writes once the API is ready.
func StartServer(dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{DataDir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"), Port: port, Log: filepath.Join(dir, "server.log")}
	return s, s.Start()
}

// Start (re)starts the process on the same data dir and port.
func (s *Server) Start() error {
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(s.Kubeconfig)
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(skiffBin, "server", "--data-dir", s.DataDir, "--https-listen-port", fmt.Sprint(s.Port),
		"--bind-address", "127.0.0.1", "--write-kubeconfig", s.Kubeconfig, "--disable-agent")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start skiff server: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.After(60 * time.Second)
	for {
		if _, err := os.Stat(s.Kubeconfig); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("skiff server exited during start; log:\n%s", s.tail())
		case <-deadline:
			s.Kill()
			return fmt.Errorf("skiff server not ready after 60s; log:\n%s", s.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(s.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop sends SIGTERM and waits.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.Kill()
	}
}

// Kill sends SIGKILL and waits.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// RESTConfig returns a client config for the admin user.
func (s *Server) RESTConfig(t testing.TB) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg
}

// Kubectl runs the embedded kubectl against s.
func (s *Server) Kubectl(t testing.TB, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skiffBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
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
