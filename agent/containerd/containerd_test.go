package containerd

import (
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestRender checks the configuration is valid TOML and keeps every path
// of this runtime under its own directories, away from a host containerd.
func TestRender(t *testing.T) {
	c := Config{
		RootDir: "/var/lib/skiff/agent/containerd", StateDir: "/run/skiff/containerd",
		BinDir: "/var/lib/skiff/data/abc/bin", CNIConfDir: "/var/lib/skiff/agent/etc/cni/net.d",
		RegistryConfigDir: "/var/lib/skiff/agent/etc/containerd/certs.d",
		RegistryAuths:     map[string]RegistryAuth{"r.example:5000": {Username: "u", Password: `p"q`}},
		SandboxImage:      "skiff.local/pause:3.10",
	}
	for _, restrict := range []bool{false, true} {
		data, err := c.Render(restrict)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := toml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("not TOML: %v\n%s", err, data)
		}
		plugins := doc["plugins"].(map[string]any)
		rt := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
		if rt["restrict_oom_score_adj"] != restrict {
			t.Errorf("restrict_oom_score_adj = %v, want %v", rt["restrict_oom_score_adj"], restrict)
		}
		auth := plugins["io.containerd.cri.v1.images"].(map[string]any)["registry"].(map[string]any)["configs"].(map[string]any)["r.example:5000"].(map[string]any)["auth"].(map[string]any)
		if auth["password"] != `p"q` {
			t.Errorf("password %q (quoting)", auth["password"])
		}
		nri := plugins["io.containerd.nri.v1.nri"].(map[string]any)
		if nri["socket_path"] != "/run/skiff/containerd/nri.sock" {
			t.Errorf("NRI socket %v, want it under the state dir", nri["socket_path"])
		}
		runc := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)["options"].(map[string]any)
		if runc["Root"] != "/run/skiff/containerd/runc" {
			t.Errorf("runc root %v, want it under the state dir", runc["Root"])
		}
		if sd := plugins["io.containerd.shim.v1.manager"].(map[string]any)["socket_dir"]; sd != "/run/skiff/containerd/s" {
			t.Errorf("shim socket dir %v, want it under the state dir", sd)
		}
		for _, host := range []string{"/var/run/nri", "/opt/nri", "/run/containerd/", "/var/lib/containerd"} {
			if strings.Contains(string(data), host) {
				t.Errorf("config mentions the host's %s:\n%s", host, data)
			}
		}
	}
}

func TestChildEnvShimGrouping(t *testing.T) {
	// An inherited value never reaches the shims: the config decides.
	t.Setenv(shimGroupingEnv, "bogus")
	for _, tc := range []struct {
		perPod bool
		want   string
	}{
		{perPod: false, want: shimGroupingEnv + "=node"},
		{perPod: true, want: shimGroupingEnv + "=pod"},
	} {
		var got []string
		for _, e := range childEnv("/bin-dir", tc.perPod) {
			if strings.HasPrefix(e, shimGroupingEnv+"=") {
				got = append(got, e)
			}
		}
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("perPod=%v: grouping env %q, want [%s]", tc.perPod, got, tc.want)
		}
	}
}

func TestShimSocketDir(t *testing.T) {
	for _, tc := range []struct{ state, want string }{
		{"/run/skiff/containerd", "/run/skiff/containerd/s"},
		{"/run/x", "/run/x/s"},
		// 49 characters with "/s": a socket path would not fit.
		{"/tmp/skiff-agentbench-749610839/run2/containerd", fallbackShimSocketDir},
	} {
		got := Config{StateDir: tc.state}.ShimSocketDir()
		if got != tc.want {
			t.Errorf("state %s: shim socket dir %s, want %s", tc.state, got, tc.want)
		}
		if len(got)+1+64 > 107 {
			t.Errorf("state %s: %s leaves no room for a socket name", tc.state, got)
		}
	}
}
