// Package join is the agent side of joining a cluster: it parses the join
// token, fetches the server's CA without trusting it, checks the CA's
// SHA-256 against the hash the token pins before any secret is sent, and
// then trades the token for the node's client and serving certificates
// (keys are generated here and never leave the node). Credentials are
// kept in the agent's data directory and reused on restart.
package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Token is a parsed join token.
type Token struct {
	// CAHash is the hex SHA-256 of the server's CA bundle; empty when the
	// token does not pin it (then the CA is trusted on first use).
	CAHash string
	// Secret is the cluster secret sent with basic auth.
	Secret string
}

// ParseToken accepts "K10<sha256>::server:<secret>" (what the server
// writes to node-token) or a bare secret (what --token gave the server).
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("join token is empty")
	}
	if !strings.HasPrefix(s, "K10") {
		if strings.Contains(s, "::") {
			return Token{}, errors.New("join token: unknown format (want K10<ca-hash>::server:<secret> or a bare secret)")
		}
		return Token{Secret: s}, nil
	}
	hash, cred, ok := strings.Cut(s[3:], "::")
	if !ok {
		return Token{}, errors.New("join token: K10 token without '::' separator")
	}
	if len(hash) != 64 {
		return Token{}, fmt.Errorf("join token: CA hash has %d hex digits, want 64", len(hash))
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return Token{}, fmt.Errorf("join token: CA hash is not hex: %w", err)
	}
	user, secret, ok := strings.Cut(cred, ":")
	if !ok || user != "server" || secret == "" {
		return Token{}, errors.New("join token: want K10<ca-hash>::server:<secret>")
	}
	return Token{CAHash: strings.ToLower(hash), Secret: secret}, nil
}

// MaxClockSkew is how far this machine's clock may be from the server's:
// certificates are valid from an hour before they are issued.
const MaxClockSkew = 50 * time.Minute

// Errors a caller may tell apart (retry only transient ones).
var (
	ErrCAHash       = errors.New("server CA does not match the join token's CA hash (wrong server, or a man in the middle)")
	ErrUnauthorized = errors.New("join token rejected by the server (wrong cluster secret)")
	ErrClockSkew    = errors.New("clock skew")
)

// Config is what joining needs.
type Config struct {
	Server   string // https://host:port
	Token    Token
	NodeName string
	// Addresses the kubelet serving certificate covers (node IPs, names).
	Addresses []string
	// Dir keeps the node's keys, certificates and password.
	Dir    string
	Logger *slog.Logger
	// Timeout bounds each request (default 15 s).
	Timeout time.Duration
}

// Credentials are the files a joined node uses.
type Credentials struct {
	CACert                  string
	ClientCert, ClientKey   string
	ServingCert, ServingKey string
}

func (c Config) paths() Credentials {
	return Credentials{
		CACert:      filepath.Join(c.Dir, "server-ca.crt"),
		ClientCert:  filepath.Join(c.Dir, "client-kubelet.crt"),
		ClientKey:   filepath.Join(c.Dir, "client-kubelet.key"),
		ServingCert: filepath.Join(c.Dir, "serving-kubelet.crt"),
		ServingKey:  filepath.Join(c.Dir, "serving-kubelet.key"),
	}
}

// Join returns the node's credentials, obtaining them from the server
// unless valid ones for this node and server CA are already on disk.
func Join(ctx context.Context, c Config) (Credentials, error) {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	if c.Timeout == 0 {
		c.Timeout = 15 * time.Second
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return Credentials{}, fmt.Errorf("join: %w", err)
	}
	u, err := url.Parse(c.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return Credentials{}, fmt.Errorf("join: server URL %q: want https://host:port", c.Server)
	}
	ca, serverTime, err := fetchCA(ctx, c)
	if err != nil {
		return Credentials{}, err
	}
	sum := sha256.Sum256(ca)
	got := hex.EncodeToString(sum[:])
	if c.Token.CAHash == "" {
		log.Warn("JOIN TOKEN DOES NOT PIN THE SERVER CA: trusting the CA the server sent without verification; a man in the middle could impersonate the server. Use the full K10... token from the server's node-token file.",
			"server", c.Server, "caHash", got)
	} else if got != c.Token.CAHash {
		return Credentials{}, fmt.Errorf("join: %w: server %s sent a CA with hash %s, token pins %s", ErrCAHash, c.Server, got, c.Token.CAHash)
	}
	if !serverTime.IsZero() {
		if skew := time.Since(serverTime); skew > MaxClockSkew || skew < -MaxClockSkew {
			return Credentials{}, fmt.Errorf("join: %w: this machine's clock is %s away from the server's (%s); fix the time (NTP) and retry",
				ErrClockSkew, skew.Round(time.Second), serverTime.UTC().Format(time.RFC3339))
		}
	}
	paths := c.paths()
	if reusable(paths, ca, c.NodeName, c.Addresses) {
		log.Info("reusing node credentials", "dir", c.Dir)
		return paths, nil
	}
	password, err := nodePassword(filepath.Join(c.Dir, "node-password"))
	if err != nil {
		return Credentials{}, err
	}
	clientKey, clientCSR, err := newCSR(pkix.Name{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}})
	if err != nil {
		return Credentials{}, err
	}
	servingKey, servingCSR, err := newCSR(pkix.Name{CommonName: c.NodeName})
	if err != nil {
		return Credentials{}, err
	}
	body, _ := json.Marshal(map[string]any{
		"nodeName": c.NodeName, "password": password,
		"clientCSR": string(clientCSR), "servingCSR": string(servingCSR),
		"addresses": c.Addresses,
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return Credentials{}, errors.New("join: the server's CA bundle holds no certificate")
	}
	hc := &http.Client{Timeout: c.Timeout, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.Server, "/")+"/v1-skiff/node-certificates", bytes.NewReader(body))
	if err != nil {
		return Credentials{}, fmt.Errorf("join: %w", err)
	}
	req.SetBasicAuth("node", c.Token.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return Credentials{}, fmt.Errorf("join: %w", transient(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return Credentials{}, fmt.Errorf("join: %w", ErrUnauthorized)
	case resp.StatusCode == http.StatusServiceUnavailable:
		return Credentials{}, fmt.Errorf("join: %w", transient(fmt.Errorf("server %s is starting", c.Server)))
	case resp.StatusCode != http.StatusOK:
		return Credentials{}, fmt.Errorf("join: server refused (%s): %s", resp.Status, strings.TrimSpace(string(data)))
	}
	var out struct{ ClientCert, ServingCert, CACert string }
	if err := json.Unmarshal(data, &out); err != nil {
		return Credentials{}, fmt.Errorf("join: malformed server answer: %w", err)
	}
	if err := checkIssued(out.ClientCert, clientKey, ca, x509.ExtKeyUsageClientAuth); err != nil {
		return Credentials{}, fmt.Errorf("join: the server's client certificate is unusable: %w", err)
	}
	if err := checkIssued(out.ServingCert, servingKey, ca, x509.ExtKeyUsageServerAuth); err != nil {
		return Credentials{}, fmt.Errorf("join: the server's serving certificate is unusable: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{paths.CACert, ca, 0o644},
		{paths.ClientKey, clientKey, 0o600},
		{paths.ClientCert, []byte(out.ClientCert), 0o644},
		{paths.ServingKey, servingKey, 0o600},
		{paths.ServingCert, []byte(out.ServingCert), 0o644},
	} {
		if err := writeAtomic(f.path, f.data, f.mode); err != nil {
			return Credentials{}, fmt.Errorf("join: %w", err)
		}
	}
	log.Info("joined cluster", "server", c.Server, "node", c.NodeName)
	return paths, nil
}

// TransientError marks errors worth retrying (network, server starting).
type TransientError struct{ Err error }

func (e TransientError) Error() string { return e.Err.Error() }
func (e TransientError) Unwrap() error { return e.Err }

func transient(err error) error { return TransientError{err} }

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	var t TransientError
	return errors.As(err, &t)
}

// fetchCA gets /cacerts without verifying the server (the token's hash
// does that) and the server's clock from the Date header.
func fetchCA(ctx context.Context, c Config) ([]byte, time.Time, error) {
	hc := &http.Client{Timeout: c.Timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // verified by hash below
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Server, "/")+"/cacerts", nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("join: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return nil, time.Time{}, fmt.Errorf("join: server %s unreachable: %w", c.Server, transient(op))
		}
		return nil, time.Time{}, fmt.Errorf("join: server %s: %w", c.Server, transient(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("join: read CA: %w", transient(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, fmt.Errorf("join: %s answered %s to /cacerts: is it a skiff server?", c.Server, resp.Status)
	}
	t, _ := http.ParseTime(resp.Header.Get("Date"))
	return data, t, nil
}

// reusable reports whether the stored credentials belong to this node
// name, chain to ca and stay valid for at least a day.
func reusable(p Credentials, ca []byte, node string, addrs []string) bool {
	old, err := os.ReadFile(p.CACert)
	if err != nil || !bytes.Equal(old, ca) {
		return false
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for _, f := range []struct {
		cert, key, cn string
		usage         x509.ExtKeyUsage
	}{
		{p.ClientCert, p.ClientKey, "system:node:" + node, x509.ExtKeyUsageClientAuth},
		{p.ServingCert, p.ServingKey, node, x509.ExtKeyUsageServerAuth},
	} {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return false
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil || leaf.Subject.CommonName != f.cn || time.Until(leaf.NotAfter) < 24*time.Hour {
			return false
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{f.usage}}); err != nil {
			return false
		}
		if f.usage == x509.ExtKeyUsageServerAuth {
			// The node's addresses may have changed since.
			for _, a := range addrs {
				if leaf.VerifyHostname(a) != nil {
					return false
				}
			}
		}
	}
	return true
}

// checkIssued verifies that a signed certificate chains to ca, carries
// the usage asked for and belongs to the key generated here.
func checkIssued(certPEM string, keyPEM, ca []byte, usage x509.ExtKeyUsage) error {
	pair, err := tls.X509KeyPair([]byte(certPEM), keyPEM)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// nodePassword reads the node's password, creating it on first use.
func nodePassword(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil && len(bytes.TrimSpace(data)) >= 32 {
		return string(bytes.TrimSpace(data)), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(b)
	if err := writeAtomic(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("join: node password: %w", err)
	}
	return pw, nil
}

func newCSR(subject pkix.Name) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
