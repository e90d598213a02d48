package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	s := Serving{DNSNames: []string{"localhost", "kubernetes.default.svc"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}
	b, err := Ensure(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, b.CACert)
	if !ca.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	serving := readCert(t, b.ServingCert)
	if err := serving.CheckSignatureFrom(ca); err != nil {
		t.Fatal(err)
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: poolOf(ca), DNSName: "kubernetes.default.svc"}); err != nil {
		t.Fatalf("serving certificate does not verify for its SAN: %v", err)
	}
	admin := readCert(t, b.AdminCert)
	if admin.Subject.CommonName != "system:admin" || len(admin.Subject.Organization) != 1 || admin.Subject.Organization[0] != "system:masters" {
		t.Fatalf("admin subject %v", admin.Subject)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: poolOf(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("admin certificate is not a client certificate of the CA: %v", err)
	}
	if st, _ := os.Stat(b.CAKey); st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v", st.Mode())
	}

	// Restart with the same names reuses everything.
	hash, _ := b.CAHash()
	b2, err := Ensure(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if hash2, _ := b2.CAHash(); hash2 != hash || !readCert(t, b2.ServingCert).Equal(serving) {
		t.Fatal("restart reissued certificates")
	}
	// A new SAN reissues the serving certificate from the same CA.
	s.DNSNames = append(s.DNSNames, "skiff.example")
	b3, err := Ensure(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	reissued := readCert(t, b3.ServingCert)
	if reissued.Equal(serving) {
		t.Fatal("serving certificate not reissued for a new SAN")
	}
	if hash3, _ := b3.CAHash(); hash3 != hash {
		t.Fatal("CA changed")
	}
	if _, err := reissued.Verify(x509.VerifyOptions{Roots: poolOf(ca), DNSName: "skiff.example"}); err != nil {
		t.Fatal(err)
	}
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}
