// Package crdopenapi serves the OpenAPI v3 documents of CustomResource
// Definitions (/openapi/v3 of the apiextensions server) built on demand.
//
// Upstream's CRD OpenAPI v3 controller builds the document of every
// served version of every Established CRD when the CRD changes, keeps it,
// and its handler (kube-openapi's handler3) marshals each one to JSON to
// put a hash of the bytes in the /openapi/v3 root — which the aggregator
// reads every second. With 20 CRDs that is ~7 MB of heap kept for
// documents that only `kubectl explain`, client-side apply and similar
// clients ever read. Here the root's hash of a group-version is computed
// from what its document is built from: the identity of the binary and
// its configuration (given by the caller), the group-version and, for
// each CRD that serves it, its name, UID and generation (the document is
// built from the CRD's spec alone, and the generation changes with every
// change of the spec). The document is built with upstream's builder and
// merge (k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder)
// when a client asks for it and is served by handler3 (content
// negotiation, ETag); nothing is kept. A request with the current hash
// gets immutable caching headers, one with a stale hash a redirect to the
// current URL, as handler3 answers.
package crdopenapi

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	listers "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/kube-openapi/pkg/spec3"
)

// Static is the server's own group-versions, whose routes do not change
// while it runs.
type Static interface {
	// Paths maps each group-version path (e.g. "apis/apiextensions.k8s.io/v1")
	// to its server-relative URL with its hash.
	Paths() map[string]string
	// ServeGroupVersion serves a request for one of Paths' group-versions.
	ServeGroupVersion(w http.ResponseWriter, r *http.Request)
}

// Handler serves /openapi/v3: the root and each group-version document.
type Handler struct {
	static   Static
	crds     listers.CustomResourceDefinitionLister
	identity string
	options  builder.Options
	builds   singleflight.Group
}

// New returns a handler for static's group-versions and those of the CRDs
// in the lister. identity names the binary and the configuration that
// shape documents (feature gates included); it goes into every hash.
// selectableFields is the CustomResourceFieldSelectors feature's state.
func New(static Static, crds listers.CustomResourceDefinitionLister, identity string, selectableFields bool) *Handler {
	return &Handler{static: static, crds: crds, identity: identity,
		options: builder.Options{V2: false, IncludeSelectableFields: selectableFields}}
}

// groupVersion is a CRD group-version as the root lists it.
type groupVersion struct {
	version string
	crds    []*apiextensionsv1.CustomResourceDefinition
	hash    string
	url     string
}

// groupVersions returns the group-versions the Established CRDs serve, by
// path, with their hashes. The CRD informer's objects are shared: read only.
func (h *Handler) groupVersions() (map[string]*groupVersion, error) {
	crds, err := h.crds.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	sort.Slice(crds, func(i, j int) bool { return crds[i].Name < crds[j].Name })
	gvs := map[string]*groupVersion{}
	for _, crd := range crds {
		// As upstream's controller: only Established CRDs are published.
		if !apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			p := "apis/" + crd.Spec.Group + "/" + v.Name
			gv := gvs[p]
			if gv == nil {
				gv = &groupVersion{version: v.Name}
				gvs[p] = gv
			}
			gv.crds = append(gv.crds, crd)
		}
	}
	for p, gv := range gvs {
		s := sha512.New()
		fmt.Fprintf(s, "%s\x00%s\x00", h.identity, p)
		for _, crd := range gv.crds {
			fmt.Fprintf(s, "%s %s %d\x00", crd.Name, crd.UID, crd.Generation)
		}
		gv.hash = fmt.Sprintf("%X", s.Sum(nil))
		u := url.URL{Path: path.Join("/openapi/v3", p), RawQuery: url.Values{"hash": {gv.hash}}.Encode()}
		gv.url = u.String()
	}
	return gvs, nil
}

// ServeRoot serves the list of group-versions with their URLs.
func (h *Handler) ServeRoot(w http.ResponseWriter, r *http.Request) {
	gvs, err := h.groupVersions()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	d := handler3.OpenAPIV3Discovery{Paths: map[string]handler3.OpenAPIV3DiscoveryGroupVersion{}}
	for p, u := range h.static.Paths() {
		d.Paths[p] = handler3.OpenAPIV3DiscoveryGroupVersion{ServerRelativeURL: u}
	}
	for p, gv := range gvs {
		if _, ok := d.Paths[p]; !ok {
			d.Paths[p] = handler3.OpenAPIV3DiscoveryGroupVersion{ServerRelativeURL: gv.url}
		}
	}
	root, err := json.Marshal(d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Etag", fmt.Sprintf(`"%X"`, sha512.Sum512(root)))
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "/openapi/v3", time.Time{}, bytes.NewReader(root))
}

// ServeGroupVersion serves /openapi/v3/<group-version path>.
func (h *Handler) ServeGroupVersion(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/openapi/v3/")
	if _, ok := h.static.Paths()[p]; ok {
		h.static.ServeGroupVersion(w, r)
		return
	}
	gvs, err := h.groupVersions()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	gv, ok := gvs[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w, r, ok = CheckHash(w, r, gv.hash, gv.url)
	if !ok {
		return
	}
	// Requests that arrive while a build is running share its result
	// (and the encoded bytes handler3 caches in it).
	v, _, _ := h.builds.Do(gv.url, func() (any, error) {
		svc := handler3.NewOpenAPIService()
		svc.UpdateGroupVersion(p, h.build(gv))
		return svc, nil
	})
	v.(*handler3.OpenAPIService).HandleGroupVersion(w, r)
}

// build merges the documents of the group-version's CRDs as upstream's
// controller does. A CRD whose document cannot be built or merged (e.g.
// its kind collides with another's) is left out and logged, as the
// controller leaves it out and serves the others.
func (h *Handler) build(gv *groupVersion) *spec3.OpenAPI {
	var doc *spec3.OpenAPI
	for _, crd := range gv.crds {
		s, err := builder.BuildOpenAPIV3(crd, gv.version, h.options)
		if err == nil {
			var merged *spec3.OpenAPI
			if doc == nil {
				merged, err = builder.MergeSpecsV3(s)
			} else {
				merged, err = builder.MergeSpecsV3(doc, s)
			}
			if err == nil {
				doc = merged
				continue
			}
		}
		klog.ErrorS(err, "Leaving a CRD out of its group-version's OpenAPI v3 document", "crd", crd.Name, "version", gv.version)
	}
	if doc == nil {
		doc, _ = builder.MergeSpecsV3() // no CRD could be built: an empty document
	}
	return doc
}

// CheckHash answers a group-version request's `hash` query as handler3
// does. A stale hash gets a 301 to url (the current one) and ok is false:
// the request is answered. The current hash gets w wrapped to send
// immutable caching headers, and r without the hash (handler3 would
// compare it with the document's own). No hash: w and r as they are.
func CheckHash(w http.ResponseWriter, r *http.Request, current, url string) (http.ResponseWriter, *http.Request, bool) {
	hash := r.URL.Query().Get("hash")
	if hash == "" {
		return w, r, true
	}
	if hash != current {
		http.Redirect(w, r, url, http.StatusMovedPermanently)
		return w, r, false
	}
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Del("hash")
	r.URL.RawQuery = q.Encode()
	return &ImmutableWriter{ResponseWriter: w}, r, true
}

// ImmutableWriter adds the headers of a hashed, never-changing document to
// a 200 or 304 response (as handler3 does).
type ImmutableWriter struct {
	http.ResponseWriter
}

// WriteHeader sets the caching headers on a document or a 304.
func (w *ImmutableWriter) WriteHeader(code int) {
	if code == http.StatusOK || code == http.StatusNotModified {
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", time.Now().AddDate(1, 0, 0).Format(time.RFC1123))
	}
	w.ResponseWriter.WriteHeader(code)
}
