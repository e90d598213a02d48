// Package cni writes the node's pod network configuration for the CNI
// plugins containerd runs (bridge with host-local; containerd brings lo up
// itself), and keeps the node's nftables rules for pod egress
// (masquerading) and hostPort mappings, over netlink. Once the controller
// manager has given the node its podCIDR, pods on the node get addresses
// from it on a Linux bridge. Until
// the file exists containerd reports the network not ready and the node
// stays NotReady, as upstream.
// Cross-node routing (flannel VXLAN) replaces the single-node bridge in
// the networking issue; the bridge name and subnet layout already match
// what flannel's CNI plugin delegates to.
package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// FileName is the conflist the agent owns in the CNI config directory.
const FileName = "10-skiff.conflist"

// Bridge is the Linux bridge pods attach to.
const Bridge = "cni0"

// Config is what Configure needs.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	ConfDir  string
	// DataDir keeps host-local's address leases (default: next to ConfDir).
	DataDir string
	Logger  *slog.Logger
}

// Configure waits for the node's podCIDR and writes the conflist.
func Configure(ctx context.Context, c Config) error {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	if c.DataDir == "" {
		c.DataDir = filepath.Join(filepath.Dir(c.ConfDir), "networks")
	}
	var cidrs []string
	for {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err == nil {
			cidrs = n.Spec.PodCIDRs
			if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
				cidrs = []string{n.Spec.PodCIDR}
			}
			if len(cidrs) > 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := removeStaleBridge(cidrs, log); err != nil {
		return err
	}
	if err := EnsureMasquerade(cidrs); err != nil {
		return err
	}
	// hostPort mappings are the agent's too (RunHostPorts), not a plugin's.
	data, err := Render(cidrs, c.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	path := filepath.Join(c.ConfDir, FileName)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	log.Info("pod network configured", "podCIDRs", cidrs, "bridge", Bridge)
	return nil
}

// Render returns the conflist for the node's pod CIDRs: the bridge plugin
// alone. Masquerading (EnsureMasquerade) and hostPort mappings
// (RunHostPorts) are the agent's, over netlink, not plugins' that would
// run the host's nft program for every pod.
func Render(cidrs []string, dataDir string) ([]byte, error) {
	var ranges [][]map[string]string
	var routes []map[string]string
	for _, c := range cidrs {
		ip, _, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("cni: podCIDR %q: %w", c, err)
		}
		ranges = append(ranges, []map[string]string{{"subnet": c}})
		if ip.To4() != nil {
			routes = append(routes, map[string]string{"dst": "0.0.0.0/0"})
		} else {
			routes = append(routes, map[string]string{"dst": "::/0"})
		}
	}
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      Bridge,
		"isGateway":   true,
		"hairpinMode": true,
		"ipMasq":      false,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  ranges,
			"routes":  routes,
			"dataDir": dataDir,
		},
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "skiff",
		"plugins":    []any{bridge},
	}, "", "  ")
}

// removeStaleBridge deletes a bridge left by an earlier installation whose
// address lies outside this node's pod CIDRs (the bridge plugin refuses
// to reuse it), so the first pod recreates it with the right address.
func removeStaleBridge(cidrs []string, log *slog.Logger) error {
	link, err := netlink.LinkByName(Bridge)
	if err != nil {
		return nil // no bridge yet
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("cni: addresses of %s: %w", Bridge, err)
	}
	var nets []*net.IPNet
	for _, c := range cidrs {
		if _, n, err := net.ParseCIDR(c); err == nil {
			nets = append(nets, n)
		}
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		inside := false
		for _, n := range nets {
			inside = inside || n.Contains(a.IP)
		}
		if !inside {
			log.Warn("removing a stale pod bridge from an earlier installation", "bridge", Bridge, "address", a.IPNet.String(), "podCIDRs", cidrs)
			if err := netlink.LinkDel(link); err != nil {
				return fmt.Errorf("cni: remove stale %s: %w", Bridge, err)
			}
			return nil
		}
	}
	return nil
}
