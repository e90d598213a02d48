// Package testserver starts the real skiff binary for end-to-end tests: a
// `skiff server` on an ephemeral port with its own data directory, plus
// helpers to drive it with the embedded kubectl.
package testserver

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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Binary returns the skiff binary under test: $SKIFF_BIN, or one built from
// the module root (given relative to the calling test package) into dir.
func Binary(moduleRoot, dir string) (string, error) {
	if b := os.Getenv("SKIFF_BIN"); b != "" {
		return b, nil
	}
	bin := filepath.Join(dir, "skiff")
	fmt.Fprintln(os.Stderr, "testserver: SKIFF_BIN not set; building skiff (make e2e sets it)")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/skiff")
	cmd.Dir = moduleRoot
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build skiff: %w", err)
	}
	return bin, nil
}

// Server is a running `skiff server` process.
type Server struct {
	DataDir    string
	Kubeconfig string
	Port       int
	Log        string
	// Env, if set, is the server's environment (default: the test's).
	Env []string
	// Bin is the skiff binary; Args are extra `skiff server` flags.
	Bin  string
	Args []string
	// Agent runs the server's own node agent (root only); otherwise the
	// server starts with --disable-agent.
	Agent bool

	cmd    *exec.Cmd
	exited chan struct{}
}

func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// New describes a skiff server with its state in dir on a free port,
// without starting it (set Env or Agent, then Start).
func New(bin, dir string, args ...string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return &Server{Bin: bin, Args: args, DataDir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"), Port: port, Log: filepath.Join(dir, "server.log")}, nil
}

// StartServer starts skiff server with its state in dir and waits for the
// kubeconfig it writes once the API is ready.
func StartServer(bin, dir string, args ...string) (*Server, error) {
	s, err := New(bin, dir, args...)
	if err != nil {
		return nil, err
	}
	return s, s.Start()
}

// StartAgentServer is StartServer with the server's own node agent.
func StartAgentServer(bin, dir string, args ...string) (*Server, error) {
	s, err := New(bin, dir, args...)
	if err != nil {
		return nil, err
	}
	s.Agent = true
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
	args := []string{"server", "--data-dir", s.DataDir, "--https-listen-port", fmt.Sprint(s.Port),
		"--bind-address", "127.0.0.1", "--write-kubeconfig", s.Kubeconfig}
	if !s.Agent {
		args = append(args, "--disable-agent")
	}
	args = append(args, s.Args...)
	s.cmd = exec.Command(s.Bin, args...)
	s.cmd.Env = s.Env
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
			return fmt.Errorf("skiff server exited during start; log:\n%s", s.Tail())
		case <-deadline:
			s.Kill()
			return fmt.Errorf("skiff server not ready after 60s; log:\n%s", s.Tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Tail returns the end of the server log.
func (s *Server) Tail() string {
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
	cmd := exec.CommandContext(ctx, s.Bin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// Main is a test package's TestMain body: it starts one shared server
// (built from moduleRoot unless $SKIFF_BIN is set), hands it to use, runs
// the tests and prints the end of the server log if any failed. It returns
// the exit code for os.Exit.
func Main(m *testing.M, name, moduleRoot string, use func(*Server)) int {
	tmp, err := os.MkdirTemp("", "skiff-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, err := Binary(moduleRoot, tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	s, err := StartServer(bin, filepath.Join(tmp, "shared"))
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	defer s.Stop()
	use(s)
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "%s: server log tail:\n%s\n", name, s.Tail())
	}
	return code
}

// MustKubectl runs the embedded kubectl with stdin (may be empty) and
// fails the test on error.
func (s *Server) MustKubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := s.Kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// UniqueName is a DNS label derived from the test's name (at most max
// characters before a random suffix), so repeated runs (-count) never meet
// a terminating namespace of an earlier run.
func UniqueName(t testing.TB, max int) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > max {
		name = name[:max]
	}
	return fmt.Sprintf("%s-%04x", strings.Trim(name, "-"), rand.IntN(1<<16))
}

// Namespace creates a namespace for one test and deletes it afterwards.
func (s *Server) Namespace(t testing.TB) string {
	t.Helper()
	return s.NamedNamespace(t, UniqueName(t, 50))
}

// NamedNamespace creates namespace name for one test, deletes it
// afterwards, and returns once its default ServiceAccount exists (pods are
// refused until the ServiceAccount controller made it: upstream's e2e
// framework waits the same way).
func (s *Server) NamedNamespace(t testing.TB, name string) string {
	t.Helper()
	s.MustKubectl(t, "", "create", "namespace", name)
	t.Cleanup(func() { s.Kubectl(t, "", "delete", "namespace", name, "--wait=false") })
	cs, err := kubernetes.NewForConfig(s.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: default ServiceAccount not created within 60s: %v", name, err)
	}
	return name
}

// MustContain fails the test unless got contains every one of wants.
func MustContain(t testing.TB, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("output does not contain %q:\n%s", w, got)
		}
	}
}
