package join_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiff-sh/skiff/agent/join"
	serverjoin "github.com/skiff-sh/skiff/server/join"
	"github.com/skiff-sh/skiff/server/pki"
)

const (
	testSecret = "s3cr3t-cluster-token"
	testHash   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestParseToken(t *testing.T) {
	upper := strings.ToUpper(testHash)
	tests := []struct {
		name    string
		in      string
		want    join.Token
		wantErr string
	}{
		{name: "full K10 token", in: "K10" + testHash + "::server:" + testSecret, want: join.Token{CAHash: testHash, Secret: testSecret}},
		{name: "upper-case hash is lowered", in: "K10" + upper + "::server:abc", want: join.Token{CAHash: testHash, Secret: "abc"}},
		{name: "surrounding whitespace", in: "  K10" + testHash + "::server:abc\n", want: join.Token{CAHash: testHash, Secret: "abc"}},
		{name: "secret containing colons", in: "K10" + testHash + "::server:a:b:c", want: join.Token{CAHash: testHash, Secret: "a:b:c"}},
		{name: "bare secret", in: testSecret, want: join.Token{Secret: testSecret}},
		{name: "bare secret trimmed", in: " " + testSecret + "\n", want: join.Token{Secret: testSecret}},
		{name: "bare secret with single colon", in: "user:pass", want: join.Token{Secret: "user:pass"}},
		{name: "empty", in: "", wantErr: "empty"},
		{name: "whitespace only", in: " \t\n", wantErr: "empty"},
		{name: "hash too short", in: "K10" + testHash[:63] + "::server:abc", wantErr: "63 hex digits"},
		{name: "hash too long", in: "K10" + testHash + "0::server:abc", wantErr: "65 hex digits"},
		{name: "hash not hex", in: "K10" + strings.Repeat("g", 64) + "::server:abc", wantErr: "not hex"},
		{name: "K10 without separator", in: "K10" + testHash + ":server:abc", wantErr: "without '::'"},
		{name: "wrong user", in: "K10" + testHash + "::node:abc", wantErr: "want K10"},
		{name: "no user", in: "K10" + testHash + "::abc", wantErr: "want K10"},
		{name: "empty secret", in: "K10" + testHash + "::server:", wantErr: "want K10"},
		{name: "non-K10 with separator", in: "K11" + testHash + "::server:abc", wantErr: "unknown format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := join.ParseToken(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseToken(%q) = %+v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseToken(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseToken(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseToken(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// env is a join server (the real server/join handler, signing with a real
// CA) behind TLS with the CA's serving certificate, as the API server
// serves it.
type env struct {
	srv    *httptest.Server
	bundle *pki.Bundle
	caHash string
	client *fake.Clientset
	gets   atomic.Int32
	posts  atomic.Int32
}

type envOpts struct {
	// nilClient makes the handler's Client return nil (API not ready).
	nilClient bool
	// date, when set, overrides the Date header of every answer.
	date func() time.Time
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	bundle, err := pki.Ensure(t.TempDir(), pki.Serving{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{bundle: bundle, client: fake.NewClientset()}
	data, err := os.ReadFile(bundle.CACert)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	e.caHash = hex.EncodeToString(sum[:])
	if h, err := bundle.CAHash(); err != nil || h != e.caHash {
		t.Fatalf("bundle.CAHash() = %q, %v; want %q", h, err, e.caHash)
	}
	h := serverjoin.Handler(serverjoin.Config{
		CACertFile: bundle.CACert,
		Secret:     testSecret,
		Signer:     bundle,
		Client: func() kubernetes.Interface {
			if o.nilClient {
				return nil
			}
			return e.client
		},
		Logger: quietLogger(),
	})
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			e.gets.Add(1)
		case http.MethodPost:
			e.posts.Add(1)
		}
		if o.date != nil {
			w.Header().Set("Date", o.date().UTC().Format(http.TimeFormat))
		}
		h.ServeHTTP(w, r)
	})
	// The agent verifies the certificate POST against the CA it fetched,
	// so the server must present a certificate from that CA (httptest's
	// own certificate would fail verification).
	pair, err := tls.LoadX509KeyPair(bundle.ServingCert, bundle.ServingKey)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(wrapped)
	e.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) config(dir, node string, tok join.Token) join.Config {
	return join.Config{
		Server:    e.srv.URL,
		Token:     tok,
		NodeName:  node,
		Addresses: []string{"10.0.0.5", "fd00::5", "node-1.example"},
		Dir:       dir,
		Logger:    quietLogger(),
		Timeout:   10 * time.Second,
	}
}

func (e *env) token() join.Token { return join.Token{CAHash: e.caHash, Secret: testSecret} }

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(data) {
		t.Fatal("no CA certificate")
	}
	return p
}

func TestJoinSuccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	dir := filepath.Join(t.TempDir(), "agent") // Join creates it
	creds, err := join.Join(context.Background(), e.config(dir, "node-1", e.token()))
	if err != nil {
		t.Fatal(err)
	}
	if n := e.posts.Load(); n != 1 {
		t.Fatalf("%d certificate requests, want 1", n)
	}
	for _, p := range []string{creds.CACert, creds.ClientCert, creds.ClientKey, creds.ServingCert, creds.ServingKey} {
		if filepath.Dir(p) != dir {
			t.Errorf("%s is not in %s", p, dir)
		}
	}

	wantCA, _ := os.ReadFile(e.bundle.CACert)
	gotCA, err := os.ReadFile(creds.CACert)
	if err != nil || !bytes.Equal(gotCA, wantCA) {
		t.Fatalf("stored CA differs from the server's (err %v)", err)
	}
	for _, p := range []string{creds.ClientKey, creds.ServingKey, filepath.Join(dir, "node-password")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	roots := caPool(t, e.bundle.CACert)

	client := readCert(t, creds.ClientCert)
	if client.Subject.CommonName != "system:node:node-1" {
		t.Errorf("client CN %q", client.Subject.CommonName)
	}
	if len(client.Subject.Organization) != 1 || client.Subject.Organization[0] != "system:nodes" {
		t.Errorf("client O %v", client.Subject.Organization)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify against the CA: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(creds.ClientCert, creds.ClientKey); err != nil {
		t.Errorf("client key does not match its certificate: %v", err)
	}

	serving := readCert(t, creds.ServingCert)
	if serving.Subject.CommonName != "node-1" {
		t.Errorf("serving CN %q", serving.Subject.CommonName)
	}
	for _, name := range []string{"node-1", "node-1.example", "10.0.0.5", "fd00::5"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other-node"}); err == nil {
		t.Error("serving certificate verifies for a name it should not cover")
	}
	if _, err := tls.LoadX509KeyPair(creds.ServingCert, creds.ServingKey); err != nil {
		t.Errorf("serving key does not match its certificate: %v", err)
	}

	// The server stored the hash of the node's password.
	pw, err := os.ReadFile(filepath.Join(dir, "node-password"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), serverjoin.PasswordSecretName("node-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bytes.TrimSpace(pw))
	if string(s.Data["hash"]) != hex.EncodeToString(sum[:]) {
		t.Error("stored password hash does not match the node's password")
	}
}

func TestJoinReusesCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	c := e.config(dir, "node-1", e.token())
	creds, err := join.Join(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{creds.CACert, creds.ClientCert, creds.ClientKey, creds.ServingCert, creds.ServingKey, filepath.Join(dir, "node-password")}
	before := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		before[f] = data
	}
	creds2, err := join.Join(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if creds2 != creds {
		t.Fatalf("second Join returned %+v, want %+v", creds2, creds)
	}
	if n := e.posts.Load(); n != 1 {
		t.Fatalf("%d certificate requests after two joins, want 1 (credentials not reused)", n)
	}
	if n := e.gets.Load(); n != 2 {
		t.Fatalf("%d CA fetches, want 2 (the CA is checked on every join)", n)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, before[f]) {
			t.Errorf("%s changed on reuse", f)
		}
	}

	// Another node name in the same directory needs new certificates
	// (same node password, so the server accepts it).
	c.NodeName = "node-2"
	creds3, err := join.Join(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.posts.Load(); n != 2 {
		t.Fatalf("%d certificate requests, want 2 after renaming the node", n)
	}
	if cn := readCert(t, creds3.ClientCert).Subject.CommonName; cn != "system:node:node-2" {
		t.Fatalf("client CN %q after renaming the node", cn)
	}
}

func TestJoinRejoinsWhenCredentialsBroken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	c := e.config(dir, "node-1", e.token())
	creds, err := join.Join(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(creds.ServingKey, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := join.Join(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if n := e.posts.Load(); n != 2 {
		t.Fatalf("%d certificate requests, want 2 (a broken key must be replaced)", n)
	}
	if _, err := tls.LoadX509KeyPair(creds.ServingCert, creds.ServingKey); err != nil {
		t.Fatalf("serving pair still broken: %v", err)
	}
}

func TestJoinWithoutCAHash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	creds, err := join.Join(context.Background(), e.config(t.TempDir(), "node-1", join.Token{Secret: testSecret}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readCert(t, creds.ClientCert).Verify(x509.VerifyOptions{Roots: caPool(t, e.bundle.CACert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
}

func TestJoinErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	tests := []struct {
		name      string
		tok       join.Token
		is        error
		contains  string
		transient bool
		// posts is how many certificate requests the attempt may make.
		posts int32
	}{
		{name: "wrong CA hash", tok: join.Token{CAHash: testHash, Secret: testSecret}, is: join.ErrCAHash, posts: 0},
		{name: "wrong secret", tok: join.Token{CAHash: e.caHash, Secret: "wrong"}, is: join.ErrUnauthorized, posts: 1},
		{name: "wrong secret without hash", tok: join.Token{Secret: "wrong"}, is: join.ErrUnauthorized, posts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.posts.Load()
			_, err := join.Join(context.Background(), e.config(t.TempDir(), "node-1", tt.tok))
			if err == nil {
				t.Fatal("Join succeeded")
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			if join.IsTransient(err) != tt.transient {
				t.Fatalf("IsTransient(%v) = %v", err, !tt.transient)
			}
			if n := e.posts.Load() - before; n != tt.posts {
				t.Fatalf("%d certificate requests, want %d", n, tt.posts)
			}
		})
	}
}

func TestJoinNodePasswordMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	if _, err := join.Join(context.Background(), e.config(t.TempDir(), "node-1", e.token())); err != nil {
		t.Fatal(err)
	}
	// Another machine (another data dir, so another password) claims the
	// same node name.
	other := t.TempDir()
	_, err := join.Join(context.Background(), e.config(other, "node-1", e.token()))
	if err == nil {
		t.Fatal("a second machine took over node-1")
	}
	if !strings.Contains(err.Error(), "node password mismatch") {
		t.Fatalf("error %q does not mention the node password mismatch", err)
	}
	if join.IsTransient(err) || errors.Is(err, join.ErrUnauthorized) {
		t.Fatalf("password mismatch classified as transient/unauthorized: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "client-kubelet.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused join left a client certificate (stat err %v)", err)
	}
}

func TestJoinServerStarting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{nilClient: true})
	_, err := join.Join(context.Background(), e.config(t.TempDir(), "node-1", e.token()))
	if err == nil {
		t.Fatal("Join succeeded against a server without API client")
	}
	if !join.IsTransient(err) {
		t.Fatalf("503 not transient: %v", err)
	}
}

func TestJoinUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = join.Join(context.Background(), join.Config{
		Server: "https://" + addr, Token: join.Token{CAHash: testHash, Secret: testSecret},
		NodeName: "node-1", Dir: t.TempDir(), Logger: quietLogger(), Timeout: 5 * time.Second,
	})
	if err == nil {
		t.Fatal("Join succeeded against a closed port")
	}
	if !join.IsTransient(err) {
		t.Fatalf("unreachable server not transient: %v", err)
	}
	if errors.Is(err, join.ErrCAHash) || errors.Is(err, join.ErrUnauthorized) {
		t.Fatalf("unreachable server misclassified: %v", err)
	}
}

func TestJoinClockSkew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		offset time.Duration
		skew   bool
	}{
		{name: "server far in the past", offset: -3 * time.Hour, skew: true},
		{name: "server far in the future", offset: 3 * time.Hour, skew: true},
		{name: "small skew tolerated", offset: -10 * time.Minute, skew: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpts{date: func() time.Time { return time.Now().Add(tt.offset) }})
			_, err := join.Join(context.Background(), e.config(t.TempDir(), "node-1", e.token()))
			if !tt.skew {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, join.ErrClockSkew) {
				t.Fatalf("error %v, want ErrClockSkew", err)
			}
			if join.IsTransient(err) {
				t.Fatalf("clock skew classified as transient: %v", err)
			}
			if n := e.posts.Load(); n != 0 {
				t.Fatalf("%d certificate requests despite clock skew", n)
			}
		})
	}
}

func TestJoinBadServer(t *testing.T) {
	t.Parallel()
	notSkiff := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(notSkiff.Close)
	tests := []struct {
		name     string
		server   string
		contains string
	}{
		{name: "plain http", server: "http://127.0.0.1:1", contains: "want https://host:port"},
		{name: "no host", server: "https://", contains: "want https://host:port"},
		{name: "not a URL", server: "::", contains: "want https://host:port"},
		{name: "not a skiff server", server: notSkiff.URL, contains: "is it a skiff server?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := join.Join(context.Background(), join.Config{
				Server: tt.server, Token: join.Token{Secret: testSecret},
				NodeName: "node-1", Dir: t.TempDir(), Logger: quietLogger(), Timeout: 5 * time.Second,
			})
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error %v, want one containing %q", err, tt.contains)
			}
			if join.IsTransient(err) {
				t.Fatalf("%v classified as transient", err)
			}
		})
	}
}

func TestIsTransient(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"transient", join.TransientError{Err: base}, true},
		{"wrapped transient", errors.Join(errors.New("x"), join.TransientError{Err: base}), true},
		{"sentinel", join.ErrUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := join.IsTransient(tt.err); got != tt.want {
				t.Fatalf("IsTransient = %v, want %v", got, tt.want)
			}
		})
	}
	if !errors.Is(join.TransientError{Err: base}, base) {
		t.Fatal("TransientError does not unwrap")
	}
}
