// Package pki creates and loads the cluster's certificate authority and the
// certificates and keys issued from it: the API serving certificate, the
// admin client certificate and the ServiceAccount token signing key. Files
// are created once and reused on restart; a serving certificate whose names
// no longer cover the configured SANs is reissued.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/util/keyutil"
)

// Validity periods, as k3s uses: a ten year CA, one year leaf certificates.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
)

// Bundle holds the paths of the cluster PKI files.
type Bundle struct {
	Dir           string
	CACert        string
	CAKey         string
	ServingCert   string
	ServingKey    string
	AdminCert     string
	AdminKey      string
	SAKey         string // ServiceAccount signing key (private)
	SAPub         string // ServiceAccount verification key (public)
	caCertificate *x509.Certificate
	caSigner      crypto.Signer
}

// Paths returns the file layout under dir without touching the disk.
func Paths(dir string) *Bundle {
	return &Bundle{
		Dir:         dir,
		CACert:      filepath.Join(dir, "server-ca.crt"),
		CAKey:       filepath.Join(dir, "server-ca.key"),
		ServingCert: filepath.Join(dir, "serving-kube-apiserver.crt"),
		ServingKey:  filepath.Join(dir, "serving-kube-apiserver.key"),
		AdminCert:   filepath.Join(dir, "client-admin.crt"),
		AdminKey:    filepath.Join(dir, "client-admin.key"),
		SAKey:       filepath.Join(dir, "service.key"),
		SAPub:       filepath.Join(dir, "service.pub"),
	}
}

// Serving describes the names the API serving certificate must cover.
type Serving struct {
	DNSNames []string
	IPs      []net.IP
}

// Ensure creates whatever is missing under dir and returns the bundle.
func Ensure(dir string, serving Serving) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	b := Paths(dir)
	if err := b.ensureCA(); err != nil {
		return nil, err
	}
	if err := b.ensureServing(serving); err != nil {
		return nil, err
	}
	if err := b.ensureLeaf(b.AdminCert, b.AdminKey, pkix.Name{CommonName: "system:admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, Serving{}); err != nil {
		return nil, err
	}
	if err := b.ensureSAKey(); err != nil {
		return nil, err
	}
	return b, nil
}

// CAHash is the hex SHA-256 of the CA bundle file, as join tokens pin it.
func (b *Bundle) CAHash() (string, error) {
	data, err := os.ReadFile(b.CACert)
	if err != nil {
		return "", fmt.Errorf("pki: read CA: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

func exists(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeAtomic writes through a temporary file so a crash never leaves a
// half-written certificate or key behind.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

func (b *Bundle) ensureCA() error {
	if !exists(b.CACert, b.CAKey) {
		// The CA key is RSA: the API server checks the CA's signature on the
		// client certificate of every request, and RSA verification is several
		// times cheaper than ECDSA P-256. Leaf keys stay ECDSA (small, fast
		// handshakes).
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		sn, err := serial()
		if err != nil {
			return err
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber:          sn,
			Subject:               pkix.Name{CommonName: fmt.Sprintf("skiff-server-ca@%d", now.Unix())},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return fmt.Errorf("pki: create CA: %w", err)
		}
		if err := writeKey(b.CAKey, key); err != nil {
			return err
		}
		if err := writeCert(b.CACert, der); err != nil {
			return err
		}
	}
	cert, key, err := loadPair(b.CACert, b.CAKey)
	if err != nil {
		return fmt.Errorf("pki: load CA: %w", err)
	}
	b.caCertificate, b.caSigner = cert, key
	return nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	k, err := keyutil.PrivateKeyFromFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New(keyPath + ": not a signing key")
	}
	return cert, signer, nil
}

func (b *Bundle) ensureServing(s Serving) error {
	if exists(b.ServingCert, b.ServingKey) {
		cert, _, err := loadPair(b.ServingCert, b.ServingKey)
		if err == nil && covers(cert, s) && time.Until(cert.NotAfter) > 30*24*time.Hour && cert.CheckSignatureFrom(b.caCertificate) == nil {
			return nil
		}
	}
	return b.issue(b.ServingCert, b.ServingKey, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth, s)
}

func covers(cert *x509.Certificate, s Serving) bool {
	for _, d := range s.DNSNames {
		if !slices.Contains(cert.DNSNames, d) {
			return false
		}
	}
	for _, ip := range s.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func (b *Bundle) ensureLeaf(certPath, keyPath string, subject pkix.Name, usage x509.ExtKeyUsage, s Serving) error {
	if exists(certPath, keyPath) {
		cert, _, err := loadPair(certPath, keyPath)
		if err == nil && time.Until(cert.NotAfter) > 30*24*time.Hour && cert.CheckSignatureFrom(b.caCertificate) == nil {
			return nil
		}
	}
	return b.issue(certPath, keyPath, subject, usage, s)
}

// Issue signs a new certificate for subject; used for node and client
// certificates as well as the ones Ensure keeps.
func (b *Bundle) issue(certPath, keyPath string, subject pkix.Name, usage x509.ExtKeyUsage, s Serving) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	der, err := b.Sign(key.Public(), subject, usage, s)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writeCert(certPath, der)
}

// Sign issues a DER certificate for pub signed by the cluster CA.
func (b *Bundle) Sign(pub crypto.PublicKey, subject pkix.Name, usage x509.ExtKeyUsage, s Serving) ([]byte, error) {
	if b.caSigner == nil {
		return nil, errors.New("pki: CA not loaded")
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     s.DNSNames,
		IPAddresses:  s.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.caCertificate, pub, b.caSigner)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %s: %w", subject.CommonName, err)
	}
	return der, nil
}

func (b *Bundle) ensureSAKey() error {
	if exists(b.SAKey, b.SAPub) {
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	if err := writeKey(b.SAKey, key); err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	return writeAtomic(b.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// EnsureClient keeps a client certificate for subject (a control-plane
// component's identity) as client-<name>.crt/.key and returns the paths.
func (b *Bundle) EnsureClient(name string, subject pkix.Name) (cert, key string, err error) {
	cert = filepath.Join(b.Dir, "client-"+name+".crt")
	key = filepath.Join(b.Dir, "client-"+name+".key")
	if err := b.ensureLeaf(cert, key, subject, x509.ExtKeyUsageClientAuth, Serving{}); err != nil {
		return "", "", fmt.Errorf("pki: %s client certificate: %w", name, err)
	}
	return cert, key, nil
}
