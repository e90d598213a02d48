// Package hostip finds the address this host uses to reach other
// machines: the one place the server (advertise address) and the agent
// (node IP) detect it, so a server and its own node always agree. It also
// tells whether a server URL points at this host's loopback.
package hostip

import (
	"net"
	"net/netip"
	"net/url"
)

// IsLoopbackURL reports whether server (https://HOST:PORT) names a
// loopback address or localhost, as the server's own agent's does.
func IsLoopbackURL(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(u.Hostname())
	return err == nil && ip.Unmap().IsLoopback()
}

// Detect returns the source address of the default route, else the first
// global unicast IPv4 address of an up, non-loopback interface, else nil.
// No packet is sent: connecting a UDP socket only picks the route.
func Detect() net.IP {
	if conn, err := net.Dial("udp", "203.0.113.1:9"); err == nil {
		ip := conn.LocalAddr().(*net.UDPAddr).IP
		conn.Close()
		if ip.IsGlobalUnicast() {
			return ip
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4()
			}
		}
	}
	return nil
}
