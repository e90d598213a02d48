package cni

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// hostPortTable is the nftables table (one per IP family) the agent owns
// for pods' hostPort mappings.
const hostPortTable = "skiff-hostports"

// HostPort is one hostPort mapping: traffic to the node (or to HostIP,
// when set) on Proto/HostPort goes to PodIP:Port.
type HostPort struct {
	Proto    v1.Protocol
	HostIP   string // "" for every address of the node
	HostPort int32
	PodIP    string
	Port     int32
}

// HostPorts lists the hostPort mappings of pods: running pods with an
// address that are not on the host's network (those bind the port
// themselves). A port without hostIP maps on each of the pod's IP
// families; one with a hostIP only on that address's family.
func HostPorts(pods []*v1.Pod) []HostPort {
	var out []HostPort
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		var ips []string
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []string{p.Status.PodIP}
		}
		containers := p.Spec.Containers
		for _, c := range p.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
				containers = append(containers, c) // sidecars run beside the app
			}
		}
		for _, c := range containers {
			for _, port := range c.Ports {
				if port.HostPort <= 0 {
					continue
				}
				proto := port.Protocol
				if proto == "" {
					proto = v1.ProtocolTCP
				}
				hostIP := port.HostIP
				if ip := net.ParseIP(hostIP); ip == nil || ip.IsUnspecified() {
					hostIP = ""
				}
				for _, podIP := range ips {
					if hostIP != "" && isIPv4(hostIP) != isIPv4(podIP) {
						continue
					}
					out = append(out, HostPort{Proto: proto, HostIP: hostIP, HostPort: port.HostPort, PodIP: podIP, Port: port.ContainerPort})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b HostPort) int {
		return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), cmp.Compare(a.Proto, b.Proto),
			cmp.Compare(a.HostIP, b.HostIP), cmp.Compare(a.PodIP, b.PodIP))
	})
	return out
}

func isIPv4(s string) bool { ip := net.ParseIP(s); return ip != nil && ip.To4() != nil }

// SyncHostPorts replaces the agent's hostPort rules with ms, in one
// nftables transaction per call (over netlink; no nft program):
//   - prerouting and output: traffic to a local address of the node (or to
//     the mapping's hostIP) on the host port is sent to the pod (DNAT);
//   - postrouting: a pod reaching itself through its host port, and (IPv4)
//     the node reaching it through 127.0.0.1, are masqueraded, so replies
//     return the way they came. Loopback sources need route_localnet on
//     the pod bridge, which SyncHostPorts sets once the bridge exists.
func SyncHostPorts(ms []HostPort) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("cni: nftables: %w", err)
	}
	type chains struct{ pre, out, post *nftables.Chain }
	byFam := map[nftables.TableFamily]chains{}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		// Delete and recreate in one transaction: idempotent, and no
		// moment without rules for the mappings that stay.
		c.AddTable(&nftables.Table{Name: hostPortTable, Family: fam})
		c.DelTable(&nftables.Table{Name: hostPortTable, Family: fam})
		t := c.AddTable(&nftables.Table{Name: hostPortTable, Family: fam})
		byFam[fam] = chains{
			pre: c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}),
			out: c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest}),
			post: c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}),
		}
	}
	for _, m := range ms {
		podIP := net.ParseIP(m.PodIP)
		if podIP == nil {
			return fmt.Errorf("cni: hostPort %d: pod IP %q", m.HostPort, m.PodIP)
		}
		proto, ok := l4protos[m.Proto]
		if !ok {
			return fmt.Errorf("cni: hostPort %d: protocol %q", m.HostPort, m.Proto)
		}
		fam, nfproto, daddrOff, saddrOff, ip := nftables.TableFamilyIPv4, uint32(unix.NFPROTO_IPV4), uint32(16), uint32(12), []byte(podIP.To4())
		if podIP.To4() == nil {
			fam, nfproto, daddrOff, saddrOff, ip = nftables.TableFamilyIPv6, unix.NFPROTO_IPV6, 24, 8, []byte(podIP.To16())
		}
		ch := byFam[fam]
		// Where the traffic is addressed to.
		dst := []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
		if m.HostIP != "" {
			hip := net.ParseIP(m.HostIP)
			b := []byte(hip.To16())
			if fam == nftables.TableFamilyIPv4 {
				b = hip.To4()
			}
			dst = []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: uint32(len(b))},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
			}
		}
		port := func(p int32) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(p))},
			}
		}
		dnat := append(append(slices.Clone(dst), port(m.HostPort)...),
			&expr.Immediate{Register: 1, Data: ip},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(uint16(m.Port))},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfproto, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		)
		c.AddRule(&nftables.Rule{Table: ch.pre.Table, Chain: ch.pre, Exprs: dnat})
		c.AddRule(&nftables.Rule{Table: ch.out.Table, Chain: ch.out, Exprs: slices.Clone(dnat)})
		// After DNAT: to the pod's address and port.
		toPod := append([]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: uint32(len(ip))},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
		}, port(m.Port)...)
		hairpin := append(slices.Clone(toPod),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: uint32(len(ip))},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
			&expr.Masq{})
		c.AddRule(&nftables.Rule{Table: ch.post.Table, Chain: ch.post, Exprs: hairpin})
		if fam == nftables.TableFamilyIPv4 {
			loopback := append(slices.Clone(toPod),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
				&expr.Masq{})
			c.AddRule(&nftables.Rule{Table: ch.post.Table, Chain: ch.post, Exprs: loopback})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("cni: nftables hostPort rules: %w", err)
	}
	if len(ms) > 0 {
		// 127.0.0.1 → pod through the bridge (as the portmap plugin does).
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+Bridge+"/route_localnet", []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("cni: route_localnet on %s: %w", Bridge, err)
		}
	}
	return nil
}

var l4protos = map[v1.Protocol]byte{v1.ProtocolTCP: unix.IPPROTO_TCP, v1.ProtocolUDP: unix.IPPROTO_UDP, v1.ProtocolSCTP: unix.IPPROTO_SCTP}

// RunHostPorts keeps the node's hostPort rules in step with its pods until
// ctx ends: it watches the pods bound to nodeName and rewrites the rules
// whenever their mappings change.
func RunHostPorts(ctx context.Context, client kubernetes.Interface, nodeName string, log *slog.Logger) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	}))
	inf := f.Core().V1().Pods()
	changed := make(chan struct{}, 1)
	kick := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, n any) { kick(n) }, DeleteFunc: kick,
	}); err != nil {
		log.Error("hostPort rules: pod watch", "err", err)
		return
	}
	f.StartWithContext(ctx)
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return
	}
	var applied []HostPort
	first := true
	for {
		pods, err := inf.Lister().List(labels.Everything())
		if err == nil {
			ms := HostPorts(pods)
			if first || !reflect.DeepEqual(ms, applied) {
				if err := SyncHostPorts(ms); err != nil {
					log.Error("hostPort rules", "err", err)
				} else {
					applied, first = ms, false
					log.Info("hostPort rules written", "mappings", len(ms))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(time.Minute): // retry after an error
		}
	}
}

// RemoveHostPorts deletes the agent's hostPort tables (skiff killall).
func RemoveHostPorts() error { return removeTables(hostPortTable) }
