// Package authncache remembers, for a few seconds, who a client
// certificate chain authenticated as, so the API server does not verify
// the same chain's signatures on every request of a connection
// (upstream's x509 authenticator runs crypto/x509 Verify per request: ~6%
// of the API server's CPU under a create load, RSA verification mostly).
// Upstream explored the same per-connection cache (kubernetes/kubernetes
// PR 100902) but has none.
//
// Only what the x509 authenticator decided is cached: requests that carry
// another credential (a bearer token in Authorization or in a WebSocket
// protocol) are never answered from the cache, and a result is remembered
// only when its user is exactly the certificate's identity (name from the
// common name, groups from the organizations). Entries end after the TTL
// (so a client CA removed from the bundle stops being accepted within it)
// and never outlive a certificate of the chain.
package authncache

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
)

// maxEntries bounds the cache; when full it starts over.
const maxEntries = 4096

// Cache wraps the API server's request authenticator.
type Cache struct {
	delegate authenticator.Request
	ttl      time.Duration
	now      func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]entry
}

type entry struct {
	resp    *authenticator.Response
	expires time.Time
}

// New caches delegate's certificate results for ttl. delegate must be the
// whole authenticator of the chain (with the authenticated group added),
// and must not include front-proxy (request header) authentication, whose
// result depends on headers, not on the certificate alone.
func New(delegate authenticator.Request, ttl time.Duration) *Cache {
	return &Cache{delegate: delegate, ttl: ttl, now: time.Now, entries: map[[sha256.Size]byte]entry{}}
}

// AuthenticateRequest implements authenticator.Request.
func (c *Cache) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	if !certificateOnly(req) {
		return c.delegate.AuthenticateRequest(req)
	}
	chain := req.TLS.PeerCertificates
	key := chainKey(chain)
	now := c.now()
	c.mu.Lock()
	e, hit := c.entries[key]
	c.mu.Unlock()
	if hit && now.Before(e.expires) {
		return copyResponse(e.resp), true, nil
	}
	resp, ok, err := c.delegate.AuthenticateRequest(req)
	if err != nil || !ok || !identityOf(resp, chain[0]) {
		return resp, ok, err
	}
	expires := now.Add(c.ttl)
	for _, cert := range chain {
		if cert.NotAfter.Before(expires) {
			expires = cert.NotAfter
		}
	}
	c.mu.Lock()
	if len(c.entries) >= maxEntries {
		clear(c.entries)
	}
	c.entries[key] = entry{resp: copyResponse(resp), expires: expires}
	c.mu.Unlock()
	return resp, ok, err
}

// certificateOnly: the request presents a client certificate that is in
// its validity period and no other credential.
func certificateOnly(req *http.Request) bool {
	if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		return false
	}
	if req.Header.Get("Authorization") != "" {
		return false
	}
	for _, p := range req.Header.Values("Sec-WebSocket-Protocol") {
		if strings.Contains(p, "bearer.authorization.k8s.io") {
			return false
		}
	}
	now := time.Now()
	leaf := req.TLS.PeerCertificates[0]
	return !now.Before(leaf.NotBefore) && !now.After(leaf.NotAfter)
}

// chainKey identifies the presented chain by its bytes: everything the
// verification read.
func chainKey(chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, cert := range chain {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(cert.Raw))))
		h.Write(cert.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// identityOf: resp is what the x509 authenticator makes of leaf (user from
// the common name, groups from the organizations, plus
// system:authenticated), not an anonymous or token identity.
func identityOf(resp *authenticator.Response, leaf *x509.Certificate) bool {
	if resp == nil || resp.User == nil || resp.User.GetName() != leaf.Subject.CommonName ||
		resp.User.GetName() == user.Anonymous || len(resp.Audiences) != 0 {
		return false
	}
	groups := slices.DeleteFunc(slices.Clone(resp.User.GetGroups()), func(g string) bool { return g == user.AllAuthenticated })
	return slices.Equal(groups, leaf.Subject.Organization)
}

func copyResponse(r *authenticator.Response) *authenticator.Response {
	u := r.User
	var extra map[string][]string
	if len(u.GetExtra()) != 0 {
		extra = make(map[string][]string, len(u.GetExtra()))
		for k, v := range u.GetExtra() {
			extra[k] = slices.Clone(v)
		}
	}
	return &authenticator.Response{
		User: &user.DefaultInfo{
			Name:   u.GetName(),
			UID:    u.GetUID(),
			Groups: slices.Clone(u.GetGroups()),
			Extra:  extra,
		},
	}
}
