package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// TestLoopbackClientsNoGzip: the in-process components' kubeconfigs turn
// gzip off, as upstream's scheduler and controller manager do for their
// own clients; the admin kubeconfig given to users keeps client-go's
// default.
func TestLoopbackClientsNoGzip(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(shared.DataDir, "server", "cred", "*.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	// controller, scheduler, local-path and the other control loops.
	if len(files) < 3 {
		t.Fatalf("in-process kubeconfigs: %v, want at least 3", files)
	}
	for _, f := range files {
		cfg, err := clientcmd.BuildConfigFromFlags("", f)
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.DisableCompression {
			t.Errorf("%s: compression on, want off for a loopback client", filepath.Base(f))
		}
	}
	admin, err := clientcmd.BuildConfigFromFlags("", shared.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if admin.DisableCompression {
		t.Errorf("admin kubeconfig %s turns compression off; users' clients should keep the default", shared.Kubeconfig)
	}
}

// TestInformersReadTheWatchCache: the API server's informers (shared with
// the controller manager and the scheduler) list and watch the watch cache
// in-process (server/apiserver/cachelw), never over a loopback request:
// the server's own counter of where they were served from has watches
// from the cache for resources of several groups, the core group's pods,
// nodes and namespaces among them, and none from the client.
func TestInformersReadTheWatchCache(t *testing.T) {
	t.Parallel()
	cs := clientset(t, false)
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	var want []string
	for _, r := range []string{"pods", "nodes", "namespaces", "configmaps", "deployments", "replicasets", "endpointslices", "clusterroles", "leases", "priorityclasses"} {
		want = append(want, `skiff_cachelw_requests_total{from="cache",resource="`+r+`",verb="watch"} `)
	}
	for {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for line := range strings.Lines(string(raw)) {
			if strings.HasPrefix(line, `skiff_cachelw_requests_total{from="client"`) {
				t.Fatalf("an informer was served over the API: %s", line)
			}
			for _, w := range want {
				if v, ok := strings.CutPrefix(line, w); ok && strings.TrimSpace(v) != "0" {
					found++
				}
			}
		}
		if found == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every informer watched the watch cache, per /metrics; want %q", want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
