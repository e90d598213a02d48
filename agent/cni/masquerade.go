package cni

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// natTable is the nftables table the agent owns for pod egress.
const natTable = "skiff-nat"

// EnsureMasquerade installs (replacing any earlier version) one nftables
// rule per pod CIDR: traffic from pods that leaves the node other than over
// the pod bridge is masqueraded to the node's address. One rule set per
// node, written over netlink (google/nftables), instead of the bridge
// plugin running `nft` for every pod.
func EnsureMasquerade(cidrs []string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("cni: nftables: %w", err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		// Delete and recreate in one transaction: idempotent across restarts.
		c.AddTable(&nftables.Table{Name: natTable, Family: fam})
		c.DelTable(&nftables.Table{Name: natTable, Family: fam})
	}
	tables := map[nftables.TableFamily]*nftables.Chain{}
	for _, s := range cidrs {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return fmt.Errorf("cni: podCIDR %q: %w", s, err)
		}
		fam, off, size := nftables.TableFamilyIPv4, uint32(12), 4
		if n.IP.To4() == nil {
			fam, off, size = nftables.TableFamilyIPv6, 8, 16
		}
		ch, ok := tables[fam]
		if !ok {
			t := c.AddTable(&nftables.Table{Name: natTable, Family: fam})
			ch = c.AddChain(&nftables.Chain{
				Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
			})
			tables[fam] = ch
		}
		ip := n.IP.To16()
		if size == 4 {
			ip = n.IP.To4()
		}
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(size)},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(size), Mask: []byte(n.Mask), Xor: make([]byte, size)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(ip)},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(Bridge)},
			&expr.Masq{},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("cni: nftables masquerade for %v: %w", cidrs, err)
	}
	return nil
}

// ifname is an interface name as the kernel compares it (NUL-padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// RemoveMasquerade deletes the agent's nftables table (skiff killall).
func RemoveMasquerade() error { return removeTables(natTable) }

// removeTables deletes the nftables tables called name, of every family.
func removeTables(name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := c.ListTables()
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == name {
			c.DelTable(t)
		}
	}
	return c.Flush()
}
