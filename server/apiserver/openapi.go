package apiserver

import (
	"bytes"
	"crypto/sha512"
	"debug/elf"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"os"
	"path"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	restful "github.com/emicklei/go-restful/v3"
	"github.com/google/uuid"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apiextensionsfeatures "k8s.io/apiextensions-apiserver/pkg/features"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/mux"
	"k8s.io/apiserver/pkg/server/routes"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	"k8s.io/klog/v2"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/cached"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/common/restfuladapter"
	"k8s.io/kube-openapi/pkg/handler"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/skiff-sh/skiff/server/apiserver/crdopenapi"
)

// installOpenAPI serves the kube-apiserver's /openapi/v2 and /openapi/v3
// for a server whose config has SkipOpenAPIInstallation set, with upstream's
// builders and handlers (routes.OpenAPI, kube-openapi's handler and
// handler3), except that no document is built before a client asks for it.
// Upstream's PrepareRun builds them all before the server listens: the v2
// document of every built-in type (~0.35 s of CPU here) and each v3
// group-version marshalled to JSON, because the v3 root lists a hash of each
// (~0.5 s), and keeps them (~35 MB at idle) though nothing on the start
// path reads them: the aggregator merges the v2 documents lazily and copies
// the v3 root. See openAPIV3 for the hashes; identity names the binary and
// configuration (openAPIIdentity).
//
// shared lists the root paths (e.g. "/version") that the other servers of
// the chain serve too: the aggregator's v3 root takes each group-version
// from whichever delegate it reads last, so those are left to the others
// rather than listed twice with two hashes.
//
// The kube-apiserver's StaticOpenAPISpec stays nil: upstream reads it only
// from the apiextensions server (its CRD OpenAPI v2 controller), see
// installCRDOpenAPI.
func installOpenAPI(s *genericapiserver.GenericAPIServer, v2 *openapicommon.Config, v3 *openapicommon.OpenAPIV3Config, shared map[string]bool, identity string) {
	c := s.Handler.GoRestfulContainer
	if v2 != nil {
		doc := cached.Once(cached.Func(func() (*spec.Swagger, string, error) {
			sw, err := builder.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices(c.RegisteredWebServices()), v2)
			if err != nil {
				// Upstream exits at start on this; the routes do not
				// change, so neither would a retry's result.
				klog.ErrorS(err, "Building the OpenAPI v2 document failed")
				return nil, "", fmt.Errorf("apiserver: build OpenAPI v2: %w", err)
			}
			sw.Definitions = handler.PruneDefaults(sw.Definitions)
			// The served ETag is a hash of the encoded document; this
			// one only keys the cache, and the document never changes.
			return sw, "built-in", nil
		}))
		svc := handler.NewOpenAPIServiceLazy(doc)
		svc.RegisterOpenAPIVersionedService("/openapi/v2", s.Handler.NonGoRestfulMux)
		s.OpenAPIVersionedService = svc
	}
	if v3 != nil {
		o := newOpenAPIV3(ownServices(c, shared), v3, identity)
		s.Handler.NonGoRestfulMux.Handle("/openapi/v3", http.HandlerFunc(o.serveRoot))
		s.Handler.NonGoRestfulMux.HandlePrefix("/openapi/v3/", http.HandlerFunc(o.serveGroupVersion))
	}
}

// installCRDOpenAPI serves the apiextensions server's OpenAPI for a config
// with SkipOpenAPIInstallation set. /openapi/v2 is installed as upstream's
// PrepareRun does (the static document of its own routes, into which
// upstream's CRD OpenAPI v2 controller, started by the server's post-start
// hook, merges each CRD's document lazily). /openapi/v3 is crdopenapi's:
// the server's own group-versions as the kube-apiserver's (openAPIV3,
// except the paths in shared), each CRD group-version built on request.
// OpenAPIV3VersionedService stays nil, so upstream's CRD v3 controller,
// which builds and keeps every CRD's document, does not start.
func installCRDOpenAPI(s *genericapiserver.GenericAPIServer, v2 *openapicommon.Config, v3 *openapicommon.OpenAPIV3Config,
	crds apiextensionslisters.CustomResourceDefinitionLister, shared map[string]bool, identity string) {
	c := s.Handler.GoRestfulContainer
	if v2 != nil {
		s.OpenAPIVersionedService, s.StaticOpenAPISpec = routes.OpenAPI{Config: v2}.InstallV2(c, s.Handler.NonGoRestfulMux)
	}
	if v3 != nil {
		static := newOpenAPIV3(ownServices(c, shared), v3, identity)
		h := crdopenapi.New(static, crds, identity, utilfeature.DefaultFeatureGate.Enabled(apiextensionsfeatures.CustomResourceFieldSelectors))
		s.Handler.NonGoRestfulMux.Handle("/openapi/v3", http.HandlerFunc(h.ServeRoot))
		s.Handler.NonGoRestfulMux.HandlePrefix("/openapi/v3/", http.HandlerFunc(h.ServeGroupVersion))
	}
}

// ownServices returns c's web services whose root paths are not in shared.
func ownServices(c *restful.Container, shared map[string]bool) []*restful.WebService {
	var own []*restful.WebService
	for _, ws := range c.RegisteredWebServices() {
		if !shared[ws.RootPath()] {
			own = append(own, ws)
		}
	}
	return own
}

// openAPIIdentity names what, besides a group-version's routes or CRDs,
// shapes its v3 document: the binary and the configuration.
func openAPIIdentity(v3 *openapicommon.OpenAPIV3Config) string {
	return binaryIdentity() + "\x00" + configIdentity(v3)
}

// openAPIV3 serves /openapi/v3 of a server whose routes do not change while
// it runs. The root lists each group-version's URL with a `hash` query that
// clients use as a cache key (the document at that URL is immutable);
// upstream's handler3 hashes the encoded document, so the root costs every
// document. Here the hash is computed from what the document is built from
// — the binary (binaryIdentity), the configuration that shapes documents
// (configIdentity) and the group-version's routes (writeRoutes) — so each
// document is built, by upstream's routes.OpenAPI.InstallV3 over that
// group-version alone, on its first request. The same release with the same
// settings gives the same hashes across restarts and servers, as upstream's.
type openAPIV3 struct {
	root     []byte
	etag     string
	modified time.Time
	groups   map[string]*openAPIV3Group
	paths    map[string]string
}

type openAPIV3Group struct {
	hash string
	url  string
	// handler builds the document on its first call.
	handler func() *handler3.OpenAPIService
}

func newOpenAPIV3(services []*restful.WebService, config *openapicommon.OpenAPIV3Config, identity string) *openAPIV3 {
	o := &openAPIV3{groups: map[string]*openAPIV3Group{}, paths: map[string]string{}, modified: time.Now()}
	defs := &sharedDefinitions{}
	config = defs.config(config)
	discovery := handler3.OpenAPIV3Discovery{Paths: map[string]handler3.OpenAPIV3DiscoveryGroupVersion{}}
	for _, ws := range services {
		gv := strings.TrimPrefix(ws.RootPath(), "/")
		h := sha512.New()
		fmt.Fprintf(h, "%s\x00%s\x00", identity, gv)
		writeRoutes(h, ws)
		g := &openAPIV3Group{hash: fmt.Sprintf("%X", h.Sum(nil))}
		u := url.URL{Path: path.Join("/openapi/v3", gv), RawQuery: url.Values{"hash": {g.hash}}.Encode()}
		g.url = u.String()
		g.handler = sync.OnceValue(func() (svc *handler3.OpenAPIService) {
			c := restful.NewContainer()
			c.Add(ws)
			defs.build(func() {
				svc = routes.OpenAPI{V3Config: config}.InstallV3(c, mux.NewPathRecorderMux("openapi-v3-"+gv))
			})
			return svc
		})
		o.groups[gv] = g
		o.paths[gv] = g.url
		discovery.Paths[gv] = handler3.OpenAPIV3DiscoveryGroupVersion{ServerRelativeURL: g.url}
	}
	o.root, _ = json.Marshal(discovery) // strings only: cannot fail
	o.etag = fmt.Sprintf("%X", sha512.Sum512(o.root))
	return o
}

// writeRoutes writes what of a web service's routes decides its OpenAPI
// document within one binary (which routes exist depends on the enabled
// APIs): method, path, operation, parameters and body types.
func writeRoutes(h hash.Hash, ws *restful.WebService) {
	typeName := func(v any) string {
		if v == nil {
			return ""
		}
		return reflect.TypeOf(v).String()
	}
	for _, r := range ws.Routes() {
		fmt.Fprintf(h, "%s %s %s %v %v %s %s", r.Method, r.Path, r.Operation, r.Consumes, r.Produces,
			typeName(r.ReadSample), typeName(r.WriteSample))
		for _, p := range r.ParameterDocs {
			d := p.Data()
			fmt.Fprintf(h, " %s:%d:%s:%t", d.Name, d.Kind, d.DataType, d.Required)
		}
		h.Write([]byte{0})
	}
}

func (o *openAPIV3) serveRoot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Etag", `"`+o.etag+`"`)
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "/openapi/v3", o.modified, bytes.NewReader(o.root))
}

// serveGroupVersion answers as upstream's handler3 does: a request with
// the current hash gets the document with immutable caching headers, one
// with another hash a redirect to the current URL.
func (o *openAPIV3) serveGroupVersion(w http.ResponseWriter, r *http.Request) {
	gv := strings.TrimPrefix(r.URL.Path, "/openapi/v3/")
	g, ok := o.groups[gv]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// As handler3: only a document (or 304) is cacheable, not a 406.
	w, r, ok = crdopenapi.CheckHash(w, r, g.hash, g.url)
	if !ok {
		return
	}
	g.handler().HandleGroupVersion(w, r)
}

// Paths maps each group-version path to its URL (crdopenapi.Static).
func (o *openAPIV3) Paths() map[string]string {
	return o.paths
}

// ServeGroupVersion serves a group-version document (crdopenapi.Static).
func (o *openAPIV3) ServeGroupVersion(w http.ResponseWriter, r *http.Request) {
	o.serveGroupVersion(w, r)
}

// binaryIdentity names this executable: its Go build ID (a hash of what it
// was built from; the same for identical builds, so servers of one cluster
// running the same release agree), else its size and modification time.
// Should neither be readable, every start gets its own (clients then
// refetch after a restart).
func binaryIdentity() string {
	if f, err := elf.Open("/proc/self/exe"); err == nil {
		defer f.Close()
		if sec := f.Section(".note.go.buildid"); sec != nil {
			if id, err := sec.Data(); err == nil && len(id) > 0 {
				return fmt.Sprintf("%x", sha512.Sum512(id))
			}
		}
	}
	if fi, err := os.Stat("/proc/self/exe"); err == nil {
		return fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
	}
	return uuid.NewString()
}

// configIdentity is what of the server's configuration, besides its
// routes, shapes the v3 documents: the document info (its version is the
// emulated version), security schemes and common responses (they follow
// the configured authenticators) and the feature gates (OpenAPIEnums
// strips enums from the definitions).
func configIdentity(c *openapicommon.OpenAPIV3Config) string {
	h := sha512.New()
	enc := json.NewEncoder(h)
	for _, v := range []any{c.Info, c.SecuritySchemes, c.DefaultSecurity, c.CommonResponses, c.ResponseDefinitions} {
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(h, "%v\n", err)
		}
	}
	var names []string
	if g, ok := utilfeature.DefaultFeatureGate.(interface {
		GetAll() map[featuregate.Feature]featuregate.FeatureSpec
	}); ok {
		for f := range g.GetAll() {
			names = append(names, string(f))
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s=%t\n", n, utilfeature.DefaultFeatureGate.Enabled(featuregate.Feature(n)))
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// sharedDefinitions lets the v3 builds that overlap in time (clients often
// fetch several group-versions at once) share one result of the config's
// GetDefinitions, which rebuilds the generated definitions (~8 MB) on each
// call; the last build to finish drops them.
type sharedDefinitions struct {
	get   openapicommon.GetOpenAPIDefinitions
	mu    sync.Mutex
	users int
	defs  map[string]openapicommon.OpenAPIDefinition
}

// config returns a copy of c that gets its definitions from d. The copy
// drops c's precomputed Definitions (upstream's DefaultOpenAPIV3Config
// fills them; releaseOpenAPIDefinitions clears them from c once the server
// is prepared, but a copy taken before would keep them alive): with
// GetDefinitions set, the builder computes the same definitions itself.
func (d *sharedDefinitions) config(c *openapicommon.OpenAPIV3Config) *openapicommon.OpenAPIV3Config {
	cp := *c
	if cp.GetDefinitions != nil {
		d.get = cp.GetDefinitions
		cp.GetDefinitions = d.getDefinitions
		cp.Definitions = nil
	}
	return &cp
}

// build runs f as one user of the definitions.
func (d *sharedDefinitions) build(f func()) {
	d.mu.Lock()
	d.users++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.users--; d.users == 0 {
			d.defs = nil
		}
		d.mu.Unlock()
	}()
	f()
}

func (d *sharedDefinitions) getDefinitions(ref openapicommon.ReferenceCallback) map[string]openapicommon.OpenAPIDefinition {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.defs == nil {
		d.defs = d.get(ref)
	}
	return d.defs
}

// operationIDsFromRoutes sets GetOperationIDAndTagsFromRoute on OpenAPI
// configs that have only the deprecated GetOperationIDAndTags, as
// kube-openapi's builders do on their first use of a config — but the
// builders' function closes over the builder itself, so the first document
// built from a config (the aggregator's own v2, in PrepareRun) kept every
// generated definition (~12 MB) alive for the life of the server. This one
// holds only the config. Configs are shared between the chain's servers;
// setting one twice is harmless.
func operationIDsFromRoutes(v2 []*openapicommon.Config, v3 []*openapicommon.OpenAPIV3Config) {
	fromRoute := func(get func(*restful.Route) (string, []string, error)) func(openapicommon.Route) (string, []string, error) {
		return func(r openapicommon.Route) (string, []string, error) {
			ra, ok := r.(*restfuladapter.RouteAdapter)
			if !ok {
				return "", nil, fmt.Errorf("config.GetOperationIDAndTags specified but route is not a restful v1 Route")
			}
			return get(ra.Route)
		}
	}
	for _, c := range v2 {
		if c != nil && c.GetOperationIDAndTagsFromRoute == nil && c.GetOperationIDAndTags != nil {
			c.GetOperationIDAndTagsFromRoute = fromRoute(c.GetOperationIDAndTags)
		}
	}
	for _, c := range v3 {
		if c != nil && c.GetOperationIDAndTagsFromRoute == nil && c.GetOperationIDAndTags != nil {
			c.GetOperationIDAndTagsFromRoute = fromRoute(c.GetOperationIDAndTags)
		}
	}
}
