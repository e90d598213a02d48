// Package join is the server side of node joining: the endpoints an agent
// calls before it has any credentials, served on the API server's port in
// front of its authentication.
//
//   - GET /cacerts answers the cluster CA bundle to anyone; the agent checks
//     its SHA-256 against the hash in its join token before trusting it.
//   - POST /v1-skiff/node-certificates, authenticated with the cluster
//     secret from the join token (HTTP basic auth, user "node"), signs the
//     node's client certificate (system:node:<name>, group system:nodes)
//     and its kubelet serving certificate from CSRs, so node keys never
//     leave the node. A per-node password, kept on the node and stored
//     hashed in a kube-system Secret on first join, stops another machine
//     from taking over a registered node name.
package join

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
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
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-sh/skiff/server/pki"
)

// Paths served by the handler.
const (
	CACertsPath = "/cacerts"
	CertsPath   = "/v1-skiff/node-certificates"
	// User is the basic-auth user name agents present with the secret.
	User = "node"
)

// Request is what an agent sends to obtain its certificates.
type Request struct {
	NodeName string `json:"nodeName"`
	// Password is the node's own secret (hex), kept in its data dir.
	Password string `json:"password"`
	// ClientCSR and ServingCSR are PEM certificate requests.
	ClientCSR  string `json:"clientCSR"`
	ServingCSR string `json:"servingCSR"`
	// Addresses the serving certificate must cover (IPs or DNS names).
	Addresses []string `json:"addresses"`
}

// Response carries the signed certificates (PEM).
type Response struct {
	ClientCert  string `json:"clientCert"`
	ServingCert string `json:"servingCert"`
	CACert      string `json:"caCert"`
}

// Signer signs certificates with the cluster CA (server/pki.Bundle).
type Signer interface {
	Sign(pub crypto.PublicKey, subject pkix.Name, usage x509.ExtKeyUsage, s pki.Serving) ([]byte, error)
}

// Config is the handler's dependencies.
type Config struct {
	// CACertFile is served verbatim at /cacerts (its bytes are what the
	// token's hash pins).
	CACertFile string
	// Secret is the cluster join secret.
	Secret string
	Signer Signer
	// Client reaches the API (node password Secrets); nil until the API
	// server is ready, when joins answer 503.
	Client func() kubernetes.Interface
	Logger *slog.Logger
}

// Handler serves the join endpoints.
func Handler(c Config) http.Handler {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+CACertsPath, func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(c.CACertFile)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "cannot read the cluster CA")
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(data)
	})
	mux.HandleFunc("POST "+CertsPath, c.certificates)
	return mux
}

// Handles reports whether path belongs to the join handler.
func Handles(path string) bool {
	return path == CACertsPath || strings.HasPrefix(path, "/v1-skiff/")
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func (c Config) certificates(w http.ResponseWriter, r *http.Request) {
	user, secret, ok := r.BasicAuth()
	if !ok || user != User || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
		c.Logger.Warn("node join refused: wrong token", "remote", r.RemoteAddr)
		httpError(w, http.StatusUnauthorized, "join token rejected: the cluster secret does not match this server's")
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "malformed join request: "+err.Error())
		return
	}
	if errs := validation.IsDNS1123Subdomain(req.NodeName); len(errs) > 0 {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("invalid node name %q: %s", req.NodeName, strings.Join(errs, "; ")))
		return
	}
	if len(req.Password) < 32 {
		httpError(w, http.StatusBadRequest, "node password missing or too short")
		return
	}
	clientPub, err := parseCSR(req.ClientCSR)
	if err != nil {
		httpError(w, http.StatusBadRequest, "client CSR: "+err.Error())
		return
	}
	servingPub, err := parseCSR(req.ServingCSR)
	if err != nil {
		httpError(w, http.StatusBadRequest, "serving CSR: "+err.Error())
		return
	}
	var client kubernetes.Interface
	if c.Client != nil {
		client = c.Client()
	}
	if client == nil {
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "the server is starting; retry")
		return
	}
	if err := checkPassword(r.Context(), client, req.NodeName, req.Password); err != nil {
		if errors.Is(err, errPasswordMismatch) {
			c.Logger.Warn("node join refused: node password mismatch", "node", req.NodeName, "remote", r.RemoteAddr)
			httpError(w, http.StatusForbidden, err.Error())
			return
		}
		httpError(w, http.StatusInternalServerError, "node password: "+err.Error())
		return
	}
	var dns []string
	var ips []net.IP
	for _, a := range append([]string{req.NodeName}, req.Addresses...) {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
		} else if len(validation.IsDNS1123Subdomain(a)) == 0 {
			dns = append(dns, a)
		}
	}
	clientDER, err := c.Signer.Sign(clientPub, pkix.Name{CommonName: "system:node:" + req.NodeName, Organization: []string{"system:nodes"}},
		x509.ExtKeyUsageClientAuth, pki.Serving{})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	servingDER, err := c.Signer.Sign(servingPub, pkix.Name{CommonName: req.NodeName}, x509.ExtKeyUsageServerAuth, pki.Serving{DNSNames: dns, IPs: ips})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	ca, err := os.ReadFile(c.CACertFile)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "cannot read the cluster CA")
		return
	}
	c.Logger.Info("node joined", "node", req.NodeName, "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{
		ClientCert:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientDER})),
		ServingCert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servingDER})),
		CACert:      string(ca),
	})
}

func parseCSR(p string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("bad signature: %w", err)
	}
	return csr.PublicKey, nil
}

var errPasswordMismatch = errors.New("node password mismatch: this node name is registered by another machine (delete the Secret kube-system/<node>.node-password.skiff and the Node to let it re-register)")

// PasswordSecretName is the kube-system Secret holding a node's password
// hash.
func PasswordSecretName(node string) string { return node + ".node-password.skiff" }

// checkPassword stores the hash of a new node's password, or compares
// with the stored one.
func checkPassword(ctx context.Context, client kubernetes.Interface, node, password string) error {
	sum := sha256.Sum256([]byte(password))
	hash := hex.EncodeToString(sum[:])
	secrets := client.CoreV1().Secrets(metav1.NamespaceSystem)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := secrets.Get(ctx, PasswordSecretName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: PasswordSecretName(node), Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{"skiff.dev/node-password": "true"}},
			Type:      "skiff.dev/node-password",
			Data:      map[string][]byte{"hash": []byte(hash)},
			Immutable: boolPtr(true),
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return checkPassword(ctx, client, node, password)
		}
		return err
	}
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(s.Data["hash"], []byte(hash)) != 1 {
		return errPasswordMismatch
	}
	return nil
}

func boolPtr(b bool) *bool { return &b }
