package apiserver

import (
	"fmt"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/routes"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/cached"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/common/restfuladapter"
	"k8s.io/kube-openapi/pkg/handler"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// installOpenAPI serves the kube-apiserver's /openapi/v2 and /openapi/v3
// as upstream's GenericAPIServer.PrepareRun does (routes.OpenAPI), for a
// server whose config has SkipOpenAPIInstallation set, with one change:
// the v2 document — every built-in type in one spec, ~0.35 s of CPU to
// build and several MB to keep — is built on its first request instead of
// before the server listens. Nothing on the start path reads it: the
// aggregator merges the delegates' v2 documents lazily too, and kubectl,
// client-go and Helm read v3. The v3 group-versions are still built up
// front, because the aggregator reads the v3 root, which holds a content
// hash of each of them, before it serves.
//
// The kube-apiserver's StaticOpenAPISpec stays nil: upstream reads it only
// from the apiextensions server (its CRD OpenAPI controller), whose own
// OpenAPI is installed by upstream as before.
func installOpenAPI(s *genericapiserver.GenericAPIServer, v2 *openapicommon.Config, v3 *openapicommon.OpenAPIV3Config) {
	if v2 != nil {
		c := s.Handler.GoRestfulContainer
		doc := cached.Once(cached.Func(func() (*spec.Swagger, string, error) {
			sw, err := builder.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices(c.RegisteredWebServices()), v2)
			if err != nil {
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
		s.OpenAPIV3VersionedService = routes.OpenAPI{V3Config: v3}.InstallV3(s.Handler.GoRestfulContainer, s.Handler.NonGoRestfulMux)
	}
}
