package controllers

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// TestBuiltSignal: only the informers' first list or watch fires the
// signal, not their client's /healthz wait, nor the other clients of the
// controller manager; the user agent is the one client-go's rest.Config
// wrapping sets.
func TestBuiltSignal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	fired := 0
	base := &rest.Config{Host: srv.URL}
	base.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return builtSignal{next: rt, fire: func() { fired++ }}
	})
	for _, tc := range []struct {
		agent, path string
		fires       bool
	}{
		{"shared-informers", "/healthz", false},
		{"controller-discovery", "/api", false},
		{"attachdetach-controller", "/api/v1/nodes", false},
		{"shared-informers", "/api/v1/pods", true},
		{"metadata-informers", "/apis/apps/v1/deployments", true},
	} {
		cfg := rest.CopyConfig(base)
		rest.AddUserAgent(cfg, tc.agent)
		client, err := rest.UnversionedRESTClientFor(setDefaults(cfg))
		if err != nil {
			t.Fatal(err)
		}
		before := fired
		if err := client.Get().AbsPath(tc.path).Do(t.Context()).Error(); err != nil {
			t.Fatalf("%s %s: %v", tc.agent, tc.path, err)
		}
		if got := fired > before; got != tc.fires {
			t.Errorf("%s %s: fired %v, want %v", tc.agent, tc.path, got, tc.fires)
		}
	}
}

func setDefaults(c *rest.Config) *rest.Config {
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return c
}
