package signal

import (
	"net"
	"net/netip"
	"sync"
)

// deniedPeers are the ranges a relay refuses to send to or take from,
// beyond what net.IP's predicates name (loopback, RFC 1918 and RFC 4193
// private, link-local, multicast, unspecified): the ones coturn's
// recommended denied-peer-ip list also blocks that reach a provider's or
// the host's own network, and IPv6 prefixes that translate to IPv4.
var deniedPeers = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking, used inside networks
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and 255.255.255.255 broadcast
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 (RFC 6052)
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64 (RFC 8215)
	netip.MustParsePrefix("2002::/16"),      // 6to4, wraps an IPv4 address
	netip.MustParsePrefix("2001::/32"),      // Teredo, wraps an IPv4 address
}

// publicPeer says whether ip is an address on the public internet, the
// only kind a relay talks to unless the operator allows more.
func publicPeer(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.Zone() != "" {
		return false
	}
	for _, p := range deniedPeers {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// peerPolicy decides which peer addresses a relay may exchange packets
// with: public addresses, the ranges the operator allowed, and, on the
// server's own relay address, only the ports of live allocations (two
// peers that both use this relay talk relay to relay). Any other address
// of the server's is refused, so a relay is no way into its services
// (UDP on 127.0.0.1, STUN/TURN itself, a LAN behind it).
type peerPolicy struct {
	allow   []netip.Prefix
	own     map[netip.Addr]bool
	relayIP netip.Addr

	mu    sync.Mutex
	ports map[uint16]int // live relay ports on relayIP, counted
}

func newPeerPolicy(relayIP net.IP, allow []netip.Prefix, own []netip.Addr) *peerPolicy {
	p := &peerPolicy{allow: allow, own: map[netip.Addr]bool{}, ports: map[uint16]int{}}
	if a, ok := netip.AddrFromSlice(relayIP); ok {
		p.relayIP = a.Unmap()
	}
	for _, a := range own {
		p.own[a.Unmap()] = true
	}
	return p
}

// ownAddrs are the addresses of this machine's interfaces.
func ownAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

func (p *peerPolicy) allowed(ip netip.Addr) bool {
	for _, a := range p.allow {
		if a.Contains(ip) {
			return true
		}
	}
	return false
}

// permitIP is the check on a CreatePermission or ChannelBind: TURN
// permissions name an IP address, not a port.
func (p *peerPolicy) permitIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	switch {
	case p.allowed(ip):
		return true
	case ip == p.relayIP:
		return true // relay to relay; packets are checked per port
	case p.own[ip]:
		return false
	}
	return publicPeer(ip)
}

// permitAddr is the check on every relayed packet, both ways.
func (p *peerPolicy) permitAddr(addr net.Addr) bool {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := u.AddrPort()
	ip := ap.Addr().Unmap()
	if ip == p.relayIP && !p.allowed(ip) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.ports[ap.Port()] > 0
	}
	return p.permitIP(ip)
}

func (p *peerPolicy) addPort(port uint16) {
	p.mu.Lock()
	p.ports[port]++
	p.mu.Unlock()
}

func (p *peerPolicy) removePort(port uint16) {
	p.mu.Lock()
	if p.ports[port]--; p.ports[port] <= 0 {
		delete(p.ports, port)
	}
	p.mu.Unlock()
}
