package cni

import (
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		wantRoutes []string
	}{
		{name: "IPv4", cidrs: []string{"10.42.0.0/24"}, wantRoutes: []string{"0.0.0.0/0"}},
		{name: "IPv6", cidrs: []string{"fd00:42::/64"}, wantRoutes: []string{"::/0"}},
		{name: "dual stack", cidrs: []string{"10.42.1.0/24", "fd00:42:1::/64"}, wantRoutes: []string{"0.0.0.0/0", "::/0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Render(tt.cidrs, "/var/lib/skiff/networks")
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
			// The bridge alone: masquerading and hostPorts are the agent's.
			if len(c.Plugins) != 1 {
				t.Fatalf("%d plugins, want 1", len(c.Plugins))
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
			if data, err := Render(cidrs, "/d"); err == nil {
				t.Fatalf("Render(%v) succeeded: %s", cidrs, data)
			} else if !strings.Contains(err.Error(), "podCIDR") {
				t.Fatalf("error %q does not name the podCIDR", err)
			}
		})
	}
}

func TestRenderDeterministic(t *testing.T) {
	a, err := Render([]string{"10.42.0.0/24"}, "/d")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, err := Render([]string{"10.42.0.0/24"}, "/d")
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

func TestHostPorts(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	pod := func(name string, mut func(*v1.Pod)) *v1.Pod {
		p := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c", Ports: []v1.ContainerPort{
				{ContainerPort: 8080, HostPort: 18080},
				{ContainerPort: 9090}, // no host port
			}}}},
			Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: "10.42.0.5", PodIPs: []v1.PodIP{{IP: "10.42.0.5"}}},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	tests := []struct {
		name string
		pods []*v1.Pod
		want []HostPort
	}{
		{name: "TCP by default", pods: []*v1.Pod{pod("a", nil)},
			want: []HostPort{{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "10.42.0.5", Port: 8080}}},
		{name: "UDP on a host IP", pods: []*v1.Pod{pod("a", func(p *v1.Pod) {
			p.Spec.Containers[0].Ports[0].Protocol = v1.ProtocolUDP
			p.Spec.Containers[0].Ports[0].HostIP = "192.0.2.1"
		})}, want: []HostPort{{Proto: v1.ProtocolUDP, HostIP: "192.0.2.1", HostPort: 18080, PodIP: "10.42.0.5", Port: 8080}}},
		{name: "0.0.0.0 is every address", pods: []*v1.Pod{pod("a", func(p *v1.Pod) { p.Spec.Containers[0].Ports[0].HostIP = "0.0.0.0" })},
			want: []HostPort{{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "10.42.0.5", Port: 8080}}},
		{name: "dual stack: each family, a host IP only its own", pods: []*v1.Pod{pod("a", func(p *v1.Pod) {
			p.Status.PodIPs = []v1.PodIP{{IP: "10.42.0.5"}, {IP: "fd00:42::5"}}
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, v1.ContainerPort{ContainerPort: 53, HostPort: 10053, HostIP: "fd00::1", Protocol: v1.ProtocolUDP})
		})}, want: []HostPort{
			{Proto: v1.ProtocolUDP, HostIP: "fd00::1", HostPort: 10053, PodIP: "fd00:42::5", Port: 53},
			{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "10.42.0.5", Port: 8080},
			{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "fd00:42::5", Port: 8080},
		}},
		{name: "sidecar init containers count, others do not", pods: []*v1.Pod{pod("a", func(p *v1.Pod) {
			p.Spec.InitContainers = []v1.Container{
				{Name: "side", RestartPolicy: &always, Ports: []v1.ContainerPort{{ContainerPort: 1, HostPort: 10001}}},
				{Name: "init", Ports: []v1.ContainerPort{{ContainerPort: 2, HostPort: 10002}}},
			}
		})}, want: []HostPort{
			{Proto: v1.ProtocolTCP, HostPort: 10001, PodIP: "10.42.0.5", Port: 1},
			{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "10.42.0.5", Port: 8080},
		}},
		{name: "skipped: host network, no IP yet, finished, deleting", pods: []*v1.Pod{
			pod("hostnet", func(p *v1.Pod) { p.Spec.HostNetwork = true }),
			pod("noip", func(p *v1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }),
			pod("done", func(p *v1.Pod) { p.Status.Phase = v1.PodSucceeded }),
			pod("failed", func(p *v1.Pod) { p.Status.Phase = v1.PodFailed }),
			pod("deleting", func(p *v1.Pod) { p.DeletionTimestamp = &metav1.Time{} }),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HostPorts(tt.pods); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("HostPorts:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSyncHostPorts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("programming nftables needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("reading the rules back needs the nft program")
	}
	t.Cleanup(func() { _ = RemoveHostPorts() })
	ms := []HostPort{
		{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "10.250.8.5", Port: 8080},
		{Proto: v1.ProtocolUDP, HostIP: "192.0.2.1", HostPort: 10053, PodIP: "10.250.8.6", Port: 53},
		{Proto: v1.ProtocolTCP, HostPort: 18080, PodIP: "fd00:250::5", Port: 8080},
	}
	// Twice: a second call replaces, never duplicates.
	for range 2 {
		if err := SyncHostPorts(ms); err != nil {
			t.Fatal(err)
		}
	}
	list := func(fam string) string {
		out, err := exec.Command("nft", "list", "table", fam, hostPortTable).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list %s: %v\n%s", fam, err, out)
		}
		return string(out)
	}
	v4, v6 := list("ip"), list("ip6")
	for _, want := range []struct{ table, rule string }{
		{v4, "fib daddr type local tcp dport 18080 dnat to 10.250.8.5:8080"},
		{v4, "ip daddr 192.0.2.1 udp dport 10053 dnat to 10.250.8.6:53"},
		{v4, "ip daddr 10.250.8.5 tcp dport 8080 ip saddr 10.250.8.5 masquerade"},
		{v4, "ip daddr 10.250.8.5 tcp dport 8080 ip saddr 127.0.0.0/8 masquerade"},
		{v6, "fib daddr type local tcp dport 18080 dnat to [fd00:250::5]:8080"},
		{v6, "ip6 daddr fd00:250::5 tcp dport 8080 ip6 saddr fd00:250::5 masquerade"},
	} {
		// Each DNAT rule is in prerouting and output; the others once.
		n := 1
		if strings.Contains(want.rule, "dnat") {
			n = 2
		}
		if got := strings.Count(want.table, want.rule); got != n {
			t.Errorf("%d times %q, want %d, in:\n%s", got, want.rule, n, want.table)
		}
	}
	// No mappings: the tables stay, empty.
	if err := SyncHostPorts(nil); err != nil {
		t.Fatal(err)
	}
	if v4 := list("ip"); strings.Contains(v4, "dnat") {
		t.Fatalf("rules left after syncing none:\n%s", v4)
	}
}
