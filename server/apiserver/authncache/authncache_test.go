package authncache

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
)

func cert(t *testing.T, cn string, orgs []string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fake answers with a fixed response and counts calls.
type fake struct {
	resp  *authenticator.Response
	calls int
}

func (f *fake) AuthenticateRequest(*http.Request) (*authenticator.Response, bool, error) {
	f.calls++
	if f.resp == nil {
		return nil, false, nil
	}
	return copyResponse(f.resp), true, nil
}

func userResp(name string, groups ...string) *authenticator.Response {
	return &authenticator.Response{User: &user.DefaultInfo{Name: name, Groups: groups}}
}

func request(c *x509.Certificate, header ...string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "https://x/api", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func TestCache(t *testing.T) {
	year := time.Now().Add(365 * 24 * time.Hour)
	admin := cert(t, "system:admin", []string{"system:masters"}, year)
	forged := cert(t, "system:admin", []string{"system:masters"}, year) // same subject, other key
	adminUser := userResp("system:admin", "system:masters", user.AllAuthenticated)

	for _, tc := range []struct {
		name      string
		delegate  *authenticator.Response
		first     *http.Request
		second    *http.Request
		wantCalls int // delegate calls for the two requests
	}{
		{"same chain twice: verified once", adminUser, request(admin), request(admin), 1},
		{"other chain with the same subject is verified", adminUser, request(admin), request(forged), 2},
		{"bearer token is never answered from the cache", adminUser, request(admin), request(admin, "Authorization", "Bearer x"), 2},
		{"websocket bearer token is never answered from the cache", adminUser, request(admin),
			request(admin, "Sec-WebSocket-Protocol", "base64url.bearer.authorization.k8s.io.eA"), 2},
		{"a token identity is not cached", userResp("system:serviceaccount:a:b", "system:serviceaccounts", user.AllAuthenticated),
			request(admin), request(admin), 2},
		{"groups other than the certificate's are not cached", userResp("system:admin", "other", user.AllAuthenticated),
			request(admin), request(admin), 2},
		{"anonymous is not cached", userResp(user.Anonymous, user.AllUnauthenticated), request(cert(t, user.Anonymous, nil, year)),
			nil, 2},
		{"failed authentication is not cached", nil, request(admin), request(admin), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{resp: tc.delegate}
			c := New(f, 10*time.Second)
			r1, ok1, err1 := c.AuthenticateRequest(tc.first)
			if err1 != nil || ok1 != (tc.delegate != nil) {
				t.Fatalf("first: %v %v %v", r1, ok1, err1)
			}
			if tc.second == nil {
				tc.second = tc.first
			}
			r2, ok2, err2 := c.AuthenticateRequest(tc.second)
			if err2 != nil || ok2 != ok1 {
				t.Fatalf("second: %v %v %v", r2, ok2, err2)
			}
			if ok2 && (r2.User.GetName() != tc.delegate.User.GetName() || len(r2.User.GetGroups()) != len(tc.delegate.User.GetGroups())) {
				t.Fatalf("second answered %+v, want %+v", r2.User, tc.delegate.User)
			}
			if f.calls != tc.wantCalls {
				t.Fatalf("delegate called %d times, want %d", f.calls, tc.wantCalls)
			}
		})
	}
}

func TestCacheExpiry(t *testing.T) {
	now := time.Now()
	soon := cert(t, "a", nil, now.Add(5*time.Second)) // expires before the TTL
	long := cert(t, "a", nil, now.Add(time.Hour))
	for _, tc := range []struct {
		name      string
		cert      *x509.Certificate
		after     time.Duration
		wantCalls int
	}{
		{"within TTL", long, 9 * time.Second, 1},
		{"after TTL", long, 11 * time.Second, 2},
		{"after the certificate's NotAfter, within TTL", soon, 6 * time.Second, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{resp: userResp("a", user.AllAuthenticated)}
			c := New(f, 10*time.Second)
			c.now = func() time.Time { return now }
			if _, ok, _ := c.AuthenticateRequest(request(tc.cert)); !ok {
				t.Fatal("not authenticated")
			}
			c.now = func() time.Time { return now.Add(tc.after) }
			if _, ok, _ := c.AuthenticateRequest(request(tc.cert)); !ok {
				t.Fatal("not authenticated")
			}
			if f.calls != tc.wantCalls {
				t.Fatalf("delegate called %d times, want %d", f.calls, tc.wantCalls)
			}
		})
	}
}

func TestExpiredCertificateIsNotAnsweredFromCache(t *testing.T) {
	expired := cert(t, "a", nil, time.Now().Add(-time.Minute))
	f := &fake{resp: userResp("a", user.AllAuthenticated)}
	c := New(f, 10*time.Second)
	c.entries[chainKey([]*x509.Certificate{expired})] = entry{resp: f.resp, expires: time.Now().Add(time.Hour)}
	c.AuthenticateRequest(request(expired))
	if f.calls != 1 {
		t.Fatalf("delegate called %d times, want 1: an expired certificate goes to the authenticator", f.calls)
	}
}

func TestCachedResponseIsNotShared(t *testing.T) {
	a := cert(t, "a", []string{"g"}, time.Now().Add(time.Hour))
	c := New(&fake{resp: userResp("a", "g", user.AllAuthenticated)}, 10*time.Second)
	r1, _, _ := c.AuthenticateRequest(request(a))
	r1.User.(*user.DefaultInfo).Groups[0] = "mutated"
	r2, _, _ := c.AuthenticateRequest(request(a))
	if got := r2.User.GetGroups()[0]; got != "g" {
		t.Fatalf("cached response changed by a caller: group %q", got)
	}
}
