package e2e

import (
	"path/filepath"
	"testing"

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
