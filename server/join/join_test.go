package join_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/skiff-sh/skiff/server/join"
	"github.com/skiff-sh/skiff/server/pki"
)

const secret = "cluster-secret"

var (
	password      = strings.Repeat("ab", 32)
	otherPassword = strings.Repeat("cd", 32)
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBundle(t *testing.T) *pki.Bundle {
	t.Helper()
	b, err := pki.Ensure(t.TempDir(), pki.Serving{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func csr(t *testing.T, cn string) (crypto.PublicKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key.Public(), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// badSignatureCSR is a well-formed CSR whose signature does not verify.
func badSignatureCSR(t *testing.T) string {
	t.Helper()
	_, p := csr(t, "x")
	block, _ := pem.Decode([]byte(p))
	block.Bytes[len(block.Bytes)-1] ^= 0xff
	return string(pem.EncodeToMemory(block))
}

func validRequest(t *testing.T) join.Request {
	t.Helper()
	_, c := csr(t, "system:node:node-1")
	_, s := csr(t, "node-1")
	return join.Request{NodeName: "node-1", Password: password, ClientCSR: c, ServingCSR: s,
		Addresses: []string{"10.0.0.5", "fd00::5", "node-1.example", "not a name!"}}
}

type poster struct {
	body       []byte
	user, pass string
	noAuth     bool
}

func post(t *testing.T, h http.Handler, p poster) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, join.CertsPath, bytes.NewReader(p.body))
	if !p.noAuth {
		r.SetBasicAuth(p.user, p.pass)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCACerts(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	want, err := os.ReadFile(b.CACert)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   string
		method string
		code   int
		body   []byte
	}{
		{name: "serves the CA file", file: b.CACert, method: http.MethodGet, code: http.StatusOK, body: want},
		{name: "HEAD", file: b.CACert, method: http.MethodHead, code: http.StatusOK},
		{name: "missing file", file: filepath.Join(t.TempDir(), "nope.crt"), method: http.MethodGet, code: http.StatusInternalServerError},
		{name: "POST not allowed", file: b.CACert, method: http.MethodPost, code: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := join.Handler(join.Config{CACertFile: tt.file, Secret: secret, Signer: b, Logger: quiet()})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tt.method, join.CACertsPath, nil))
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			if tt.body != nil {
				if !bytes.Equal(w.Body.Bytes(), tt.body) {
					t.Fatal("body is not the CA file")
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/x-pem-file" {
					t.Fatalf("Content-Type %q", ct)
				}
			}
		})
	}
}

type failSigner struct{}

func (failSigner) Sign(crypto.PublicKey, pkix.Name, x509.ExtKeyUsage, pki.Serving) ([]byte, error) {
	return nil, errors.New("signer broken")
}

func TestCertificatesRefused(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	client := func() kubernetes.Interface { return fake.NewClientset() }
	good := validRequest(t)
	with := func(f func(*join.Request)) []byte {
		r := good
		f(&r)
		return mustJSON(t, r)
	}
	_, notCSR := csr(t, "x")
	notCSR = strings.ReplaceAll(notCSR, "CERTIFICATE REQUEST", "CERTIFICATE")
	garbageDER := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("garbage")}))

	tests := []struct {
		name     string
		p        poster
		signer   join.Signer
		client   func() kubernetes.Interface
		noClient bool
		code     int
		contains string
	}{
		{name: "no basic auth", p: poster{body: mustJSON(t, good), noAuth: true}, code: http.StatusUnauthorized},
		{name: "wrong user", p: poster{body: mustJSON(t, good), user: "admin", pass: secret}, code: http.StatusUnauthorized},
		{name: "wrong secret", p: poster{body: mustJSON(t, good), user: join.User, pass: "nope"}, code: http.StatusUnauthorized},
		{name: "secret prefix", p: poster{body: mustJSON(t, good), user: join.User, pass: secret[:3]}, code: http.StatusUnauthorized},
		{name: "malformed JSON", p: poster{body: []byte(`{"nodeName":`)}, code: http.StatusBadRequest, contains: "malformed join request"},
		{name: "invalid node name", p: poster{body: with(func(r *join.Request) { r.NodeName = "Bad_Name" })}, code: http.StatusBadRequest, contains: "invalid node name"},
		{name: "empty node name", p: poster{body: with(func(r *join.Request) { r.NodeName = "" })}, code: http.StatusBadRequest, contains: "invalid node name"},
		{name: "short password", p: poster{body: with(func(r *join.Request) { r.Password = "short" })}, code: http.StatusBadRequest, contains: "password"},
		{name: "client CSR not PEM", p: poster{body: with(func(r *join.Request) { r.ClientCSR = "not pem" })}, code: http.StatusBadRequest, contains: "client CSR"},
		{name: "serving CSR not PEM", p: poster{body: with(func(r *join.Request) { r.ServingCSR = "not pem" })}, code: http.StatusBadRequest, contains: "serving CSR"},
		{name: "CSR with wrong PEM type", p: poster{body: with(func(r *join.Request) { r.ClientCSR = notCSR })}, code: http.StatusBadRequest, contains: "client CSR"},
		{name: "CSR garbage DER", p: poster{body: with(func(r *join.Request) { r.ClientCSR = garbageDER })}, code: http.StatusBadRequest, contains: "client CSR"},
		{name: "CSR bad signature", p: poster{body: with(func(r *join.Request) { r.ServingCSR = badSignatureCSR(t) })}, code: http.StatusBadRequest, contains: "bad signature"},
		{name: "API not ready (Client nil)", p: poster{body: mustJSON(t, good)}, noClient: true, code: http.StatusServiceUnavailable},
		{name: "API not ready (Client returns nil)", p: poster{body: mustJSON(t, good)}, client: func() kubernetes.Interface { return nil }, code: http.StatusServiceUnavailable},
		{name: "signer fails", p: poster{body: mustJSON(t, good)}, signer: failSigner{}, code: http.StatusInternalServerError, contains: "signer broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := join.Config{CACertFile: b.CACert, Secret: secret, Signer: b, Client: client, Logger: quiet()}
			if tt.signer != nil {
				c.Signer = tt.signer
			}
			if tt.client != nil {
				c.Client = tt.client
			}
			if tt.noClient {
				c.Client = nil
			}
			p := tt.p
			if p.user == "" && p.pass == "" && !p.noAuth {
				p.user, p.pass = join.User, secret
			}
			w := post(t, join.Handler(c), p)
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.contains) {
				t.Fatalf("body %q does not contain %q", w.Body, tt.contains)
			}
			if tt.code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

func decodeCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificatesIssued(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	client := fake.NewClientset()
	h := join.Handler(join.Config{CACertFile: b.CACert, Secret: secret, Signer: b, Client: func() kubernetes.Interface { return client }, Logger: quiet()})
	req := validRequest(t)
	w := post(t, h, poster{body: mustJSON(t, req), user: join.User, pass: secret})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var resp join.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(b.CACert)
	if resp.CACert != string(caPEM) {
		t.Fatal("response CA differs from the CA file")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	cc := decodeCert(t, resp.ClientCert)
	if cc.Subject.CommonName != "system:node:node-1" || !slices.Equal(cc.Subject.Organization, []string{"system:nodes"}) {
		t.Fatalf("client subject %v", cc.Subject)
	}
	if len(cc.DNSNames)+len(cc.IPAddresses) != 0 {
		t.Fatalf("client certificate has SANs %v %v", cc.DNSNames, cc.IPAddresses)
	}
	if _, err := cc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}

	sc := decodeCert(t, resp.ServingCert)
	if sc.Subject.CommonName != "node-1" {
		t.Fatalf("serving CN %q", sc.Subject.CommonName)
	}
	if want := []string{"node-1", "node-1.example"}; !slices.Equal(sc.DNSNames, want) {
		t.Fatalf("serving DNS names %v, want %v (invalid names dropped)", sc.DNSNames, want)
	}
	var ips []string
	for _, ip := range sc.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.5", "fd00::5"}; !slices.Equal(ips, want) {
		t.Fatalf("serving IPs %v, want %v", ips, want)
	}
	if _, err := sc.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.0.0.5", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatal(err)
	}
	// The certificates are for the keys in the CSRs.
	for _, pair := range []struct {
		csrPEM string
		cert   *x509.Certificate
	}{{req.ClientCSR, cc}, {req.ServingCSR, sc}} {
		block, _ := pem.Decode([]byte(pair.csrPEM))
		r, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !r.PublicKey.(*ecdsa.PublicKey).Equal(pair.cert.PublicKey) {
			t.Fatal("certificate is not for the CSR's key")
		}
	}

	s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), join.PasswordSecretName("node-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(password))
	if string(s.Data["hash"]) != hex.EncodeToString(sum[:]) {
		t.Fatal("stored hash is not the password's SHA-256")
	}
	if s.Immutable == nil || !*s.Immutable {
		t.Fatal("password Secret is not immutable")
	}
	if strings.Contains(string(s.Data["hash"]), password) {
		t.Fatal("password stored in clear")
	}
}

func TestNodePassword(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	hashOf := func(pw string) []byte {
		s := sha256.Sum256([]byte(pw))
		return []byte(hex.EncodeToString(s[:]))
	}
	stored := func(pw string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: join.PasswordSecretName("node-1"), Namespace: metav1.NamespaceSystem},
			Data: map[string][]byte{"hash": hashOf(pw)}}
	}
	// raceCreate simulates another join creating the Secret between this
	// request's Get and Create.
	raceCreate := func(pw string) func(*fake.Clientset) {
		return func(c *fake.Clientset) {
			c.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if err := c.Tracker().Add(stored(pw)); err != nil {
					return true, nil, err
				}
				return true, nil, apierrors.NewAlreadyExists(corev1.Resource("secrets"), join.PasswordSecretName("node-1"))
			})
		}
	}
	tests := []struct {
		name     string
		objects  []runtime.Object
		setup    func(*fake.Clientset)
		password string
		code     int
		contains string
	}{
		{name: "first join registers", password: password, code: http.StatusOK},
		{name: "same password again", objects: []runtime.Object{stored(password)}, password: password, code: http.StatusOK},
		{name: "another machine", objects: []runtime.Object{stored(password)}, password: otherPassword, code: http.StatusForbidden, contains: "node password mismatch"},
		{name: "lost create race, same password", setup: raceCreate(password), password: password, code: http.StatusOK},
		{name: "lost create race, other password", setup: raceCreate(otherPassword), password: password, code: http.StatusForbidden, contains: "node password mismatch"},
		{name: "API error", setup: func(c *fake.Clientset) {
			c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, errors.New("etcd down")
			})
		}, password: password, code: http.StatusInternalServerError, contains: "etcd down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(tt.objects...)
			if tt.setup != nil {
				tt.setup(client)
			}
			h := join.Handler(join.Config{CACertFile: b.CACert, Secret: secret, Signer: b, Client: func() kubernetes.Interface { return client }, Logger: quiet()})
			req := validRequest(t)
			req.Password = tt.password
			w := post(t, h, poster{body: mustJSON(t, req), user: join.User, pass: secret})
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.contains) {
				t.Fatalf("body %q does not contain %q", w.Body, tt.contains)
			}
			if tt.code != http.StatusOK {
				return
			}
			s, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), join.PasswordSecretName("node-1"), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.Data["hash"], hashOf(tt.password)) {
				t.Fatal("stored hash does not match the accepted password")
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	h := join.Handler(join.Config{CACertFile: "/nonexistent", Secret: secret})
	tests := []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, join.CertsPath, http.StatusMethodNotAllowed},
		{http.MethodGet, "/v1-skiff/other", http.StatusNotFound},
		{http.MethodGet, "/cacerts/extra", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d", w.Code, tt.code)
			}
		})
	}
}

func TestHandles(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/cacerts", true},
		{"/v1-skiff/node-certificates", true},
		{"/v1-skiff/", true},
		{"/v1-skiff/anything/else", true},
		{"/cacerts/", false},
		{"/cacertsx", false},
		{"/v1-skiff", false},
		{"/api/v1/nodes", false},
		{"/", false},
		{"", false},
		{"/CACERTS", false},
	}
	for _, tt := range tests {
		if got := join.Handles(tt.path); got != tt.want {
			t.Errorf("Handles(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestPasswordSecretName(t *testing.T) {
	if got := join.PasswordSecretName("node-1"); got != "node-1.node-password.skiff" {
		t.Fatalf("PasswordSecretName = %q", got)
	}
}
