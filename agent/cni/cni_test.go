package cni

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// conflist is the subset of the CNI network configuration list Render
// writes.
type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type          string          `json:"type"`
		Bridge        string          `json:"bridge"`
		IsGateway     *bool           `json:"isGateway"`
		HairpinMode   *bool           `json:"hairpinMode"`
		IPMasq        *bool           `json:"ipMasq"`
		IPMasqBackend *string         `json:"ipMasqBackend"`
		Backend       string          `json:"backend"`
		Capabilities  map[string]bool `json:"capabilities"`
		IPAM          *struct {
			Type    string                `json:"type"`
			Ranges  [][]map[string]string `json:"ranges"`
			Routes  []map[string]string   `json:"routes"`
			DataDir string                `json:"dataDir"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func TestRender(t *testing.T) {
	tests := []struct {
		name       string
		cidrs      []string
		nat        bool
		wantRoutes []string
	}{
		{name: "IPv4 without host ports", cidrs: []string{"10.42.0.0/24"}, wantRoutes: []string{"0.0.0.0/0"}},
		{name: "IPv4 with host ports", cidrs: []string{"10.42.0.0/24"}, nat: true, wantRoutes: []string{"0.0.0.0/0"}},
		{name: "IPv6", cidrs: []string{"fd00:42::/64"}, wantRoutes: []string{"::/0"}},
		{name: "dual stack with host ports", cidrs: []string{"10.42.1.0/24", "fd00:42:1::/64"}, nat: true, wantRoutes: []string{"0.0.0.0/0", "::/0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Render(tt.cidrs, "/var/lib/skiff/networks", tt.nat)
			if err != nil {
				t.Fatal(err)
			}
			var c conflist
			if err := json.Unmarshal(data, &c); err != nil {
				t.Fatalf("Render output is not JSON: %v\n%s", err, data)
			}
			if c.CNIVersion != "1.0.0" || c.Name != "skiff" {
				t.Fatalf("cniVersion %q name %q", c.CNIVersion, c.Name)
			}
			wantPlugins := 1
			if tt.nat {
				wantPlugins = 2
			}
			if len(c.Plugins) != wantPlugins {
				t.Fatalf("%d plugins, want %d", len(c.Plugins), wantPlugins)
			}
			br := c.Plugins[0]
			if br.Type != "bridge" || br.Bridge != Bridge {
				t.Fatalf("first plugin %q on %q, want bridge on %q", br.Type, br.Bridge, Bridge)
			}
			if br.IsGateway == nil || !*br.IsGateway || br.HairpinMode == nil || !*br.HairpinMode {
				t.Fatal("bridge must be the gateway with hairpin mode")
			}
			// Masquerading is the agent's nftables rule, never the plugin's.
			if br.IPMasq == nil || *br.IPMasq || br.IPMasqBackend != nil {
				t.Fatalf("ipMasq %v backend %v, want false and none", br.IPMasq, br.IPMasqBackend)
			}
			if br.IPAM == nil || br.IPAM.Type != "host-local" || br.IPAM.DataDir != "/var/lib/skiff/networks" {
				t.Fatalf("ipam %+v", br.IPAM)
			}
			var subnets, routes []string
			for _, r := range br.IPAM.Ranges {
				if len(r) != 1 {
					t.Fatalf("range set %v, want one range per CIDR", r)
				}
				subnets = append(subnets, r[0]["subnet"])
			}
			for _, r := range br.IPAM.Routes {
				routes = append(routes, r["dst"])
			}
			if !slices.Equal(subnets, tt.cidrs) {
				t.Fatalf("subnets %v, want %v", subnets, tt.cidrs)
			}
			if !slices.Equal(routes, tt.wantRoutes) {
				t.Fatalf("routes %v, want %v", routes, tt.wantRoutes)
			}
			for _, p := range c.Plugins[1:] {
				if p.Type != "portmap" || p.Backend != "nftables" || !p.Capabilities["portMappings"] {
					t.Fatalf("second plugin %+v, want portmap with the nftables backend", p)
				}
			}
			for _, p := range c.Plugins {
				if p.Type == "portmap" && !tt.nat {
					t.Fatal("portmap without host ports")
				}
			}
		})
	}
}

func TestRenderInvalid(t *testing.T) {
	for _, cidrs := range [][]string{
		{"10.42.0.0"},
		{"not-a-cidr"},
		{"10.42.0.0/24", "fd00::/129"},
		{""},
	} {
		t.Run(strings.Join(cidrs, ","), func(t *testing.T) {
			if data, err := Render(cidrs, "/d", true); err == nil {
				t.Fatalf("Render(%v) succeeded: %s", cidrs, data)
			} else if !strings.Contains(err.Error(), "podCIDR") {
				t.Fatalf("error %q does not name the podCIDR", err)
			}
		})
	}
}

func TestRenderDeterministic(t *testing.T) {
	a, err := Render([]string{"10.42.0.0/24"}, "/d", true)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, err := Render([]string{"10.42.0.0/24"}, "/d", true)
		if err != nil {
			t.Fatal(err)
		}
		// Configure skips rewriting the file when the bytes are equal.
		if string(a) != string(b) {
			t.Fatal("Render output is not stable across calls")
		}
	}
}

// TestEnsureMasquerade programs the real kernel (root only) and checks the
// rule with nft when it is installed.
func TestEnsureMasquerade(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("programming nftables needs root")
	}
	if err := EnsureMasquerade([]string{"10.250.7.0/24"}); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second call replaces, never duplicates.
	if err := EnsureMasquerade([]string{"10.250.7.0/24"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("nft", "delete", "table", "ip", natTable).Run() })
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	out, err := exec.Command("nft", "list", "table", "ip", natTable).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	rule := `ip saddr 10.250.7.0/24 oifname != "cni0" masquerade`
	if strings.Count(string(out), rule) != 1 {
		t.Fatalf("want exactly one %q in:\n%s", rule, out)
	}
}
