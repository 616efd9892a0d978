// Package netlab builds throw-away networks for tests from Linux network
// namespaces, veth pairs, a bridge and iptables NAT: an "internet" with
// TEST-NET-3 addresses, and peers behind real kernel NATs. Everything lives
// in namespaces the lab creates and deletes; the host's own networking is
// never touched.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"kin/internal/netns"
)

// NATKind says what stands between a peer and the internet.
type NATKind string

const (
	// Public: the peer has an internet address of its own.
	Public NATKind = "public"
	// Restricted: a home router: iptables MASQUERADE and a stateful
	// firewall that drops unsolicited traffic from the WAN, both forwarded
	// and to the router itself. A port-restricted cone NAT
	// (endpoint-independent mapping, replies only from where the peer sent
	// to). The firewall matters: when the router accepts an early inbound
	// packet for itself, conntrack records it and then remaps the peer's
	// own outgoing port, which breaks hole punching (see docs/design.md).
	Restricted NATKind = "restricted"
	// Symmetric: MASQUERADE --random-fully, a new external port per
	// destination (needs a TURN relay to get through).
	Symmetric NATKind = "symmetric"
	// FullCone: MASQUERADE that keeps the port, and every inbound UDP
	// packet to the router forwarded to the peer (endpoint-independent
	// mapping and filtering), as routers with "DMZ host" or UPnP do.
	FullCone NATKind = "fullcone"
	// UDPBlocked: a restricted router that drops all outgoing UDP; only
	// TCP leaves (a locked-down office or hotel network).
	UDPBlocked NATKind = "udpblocked"
	// DoubleNAT: a restricted home router behind a carrier-grade NAT
	// (100.64.0.0/10), itself restricted.
	DoubleNAT NATKind = "double"
)

// Kinds lists every NAT kind the lab builds.
var Kinds = []NATKind{Public, FullCone, Restricted, Symmetric, UDPBlocked, DoubleNAT}

// Lab is one throw-away network.
type Lab struct {
	t      testing.TB
	prefix string
	spaces []string
	peers  int
	inet   *Host
}

// Host is a machine in the lab: a network namespace.
type Host struct {
	NS   string
	Addr string // its own address (private behind a NAT)
	WAN  string // the address the internet sees
}

// Command runs name inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return netns.Command(ctx, h.NS, name, args...)
}

// Available says why the lab cannot run here, or "" if it can.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces and iptables)"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "needs " + tool + " (Debian: iproute2, iptables)"
		}
	}
	return ""
}

// Require stops a test that needs network namespaces when why (from an
// Available function) says they cannot be built here: it skips the test,
// unless KIN_NETLAB_REQUIRED is set (CI), where it fails.
func Require(t testing.TB, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if os.Getenv("KIN_NETLAB_REQUIRED") != "" {
		t.Fatalf("the lab must run here but cannot: %s", why)
	}
	t.Skipf("lab skipped: %s", why)
}

// New builds the internet namespace. Without root or tools it skips the
// test, or fails it in CI (see Require).
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t, Available())
	b := make([]byte, 3)
	rand.Read(b)
	l := &Lab{t: t, prefix: "kin" + hex.EncodeToString(b)}
	t.Cleanup(l.close)
	inet := l.namespace("i")
	// The bridge's MAC is fixed: by default it takes the lowest of its
	// ports' and changes as peers join, and hosts that cached the old one
	// lose their packets to 203.0.113.1 until ARP notices (seen: a TCP
	// connect lost for 10 s).
	l.sh(inet, "ip link add br0 address 02:00:00:00:00:01 type bridge", "ip addr add 203.0.113.1/24 dev br0", "ip link set br0 up")
	// Like the real internet, packets to private addresses vanish rather
	// than fail to send: a relay (coturn) gives up on an allocation when
	// sending to a peer's host candidate says "network unreachable".
	// The default route leads to a gateway nobody answers for.
	l.sh(inet, "ip neigh add 203.0.113.254 lladdr 02:00:00:00:00:fe dev br0 nud permanent",
		"ip route add default via 203.0.113.254")
	l.inet = &Host{NS: inet, Addr: "203.0.113.1", WAN: "203.0.113.1"}
	return l
}

// Internet is the namespace holding public servers (signaling, STUN, TURN).
func (l *Lab) Internet() *Host { return l.inet }

// AddPeer makes a peer host behind a NAT of the given kind.
func (l *Lab) AddPeer(kind NATKind) *Host {
	l.t.Helper()
	l.peers++
	k := l.peers
	wan := fmt.Sprintf("203.0.113.%d", 10*k)
	host := l.namespace(fmt.Sprintf("h%d", k))
	if kind == Public {
		l.link(host, "eth0", fmt.Sprintf("b%d", k), wan)
		l.sh(host, "ip route add default via 203.0.113.1")
		return &Host{NS: host, Addr: wan, WAN: wan}
	}
	router := l.namespace(fmt.Sprintf("r%d", k))
	l.link(router, "wan", fmt.Sprintf("b%d", k), wan)
	lan, addr := fmt.Sprintf("10.0.%d.1", k), fmt.Sprintf("10.0.%d.2", k)
	if kind == DoubleNAT {
		// The carrier's NAT in front; the home router's WAN is in 100.64/24.
		home := l.namespace(fmt.Sprintf("c%d", k))
		cgnat, homeWAN := fmt.Sprintf("100.64.%d.1", k), fmt.Sprintf("100.64.%d.2", k)
		l.router(router, home, "lan", "wan", cgnat, homeWAN, Restricted)
		l.sh(home, "ip route add default via "+cgnat)
		router = home
	}
	l.router(router, host, "lan", "eth0", lan, addr, kind)
	l.sh(host, "ip route add default via "+lan)
	return &Host{NS: host, Addr: addr, WAN: wan}
}

// router makes namespace r a NAT of the given kind between its "wan" link
// and a new LAN link to namespace inside (r's end rdev with address gw,
// inside's end idev with address addr).
func (l *Lab) router(r, inside, rdev, idev, gw, addr string, kind NATKind) {
	l.t.Helper()
	l.sh(r,
		"ip link add "+rdev+" type veth peer name "+idev+" netns "+inside,
		"ip addr add "+gw+"/24 dev "+rdev, "ip link set "+rdev+" up",
		"sysctl -qw net.ipv4.ip_forward=1",
	)
	l.sh(inside, "ip addr add "+addr+"/24 dev "+idev, "ip link set "+idev+" up")
	if kind == FullCone {
		l.sh(r,
			"iptables -t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination "+addr,
			"iptables -t nat -A POSTROUTING -o wan -j MASQUERADE",
		)
		return
	}
	l.sh(r,
		"iptables -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"iptables -A FORWARD -i wan -j DROP",
		"iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"iptables -A INPUT -i wan -j DROP",
	)
	if kind == UDPBlocked {
		l.sh(r, "iptables -A FORWARD -i "+rdev+" -p udp -j DROP")
	}
	masq := "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE"
	if kind == Symmetric {
		masq += " --random-fully"
	}
	l.sh(r, masq)
}

// link connects namespace ns to the internet bridge with address addr.
func (l *Lab) link(ns, dev, bridgePort, addr string) {
	l.sh(ns, "ip link add "+dev+" type veth peer name "+bridgePort+" netns "+l.inet.NS)
	l.sh(l.inet.NS, "ip link set "+bridgePort+" master br0", "ip link set "+bridgePort+" up")
	l.sh(ns, "ip addr add "+addr+"/24 dev "+dev, "ip link set "+dev+" up")
}

func (l *Lab) namespace(suffix string) string {
	l.t.Helper()
	name := l.prefix + "-" + suffix
	l.run("ip", "netns", "add", name)
	l.spaces = append(l.spaces, name)
	l.sh(name, "ip link set lo up")
	return name
}

// sh runs commands inside namespace ns.
func (l *Lab) sh(ns string, cmds ...string) {
	l.t.Helper()
	for _, c := range cmds {
		l.run(append([]string{"ip", "netns", "exec", ns}, strings.Fields(c)...)...)
	}
}

func (l *Lab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("netlab: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// close deletes every namespace (and with them their links and rules).
func (l *Lab) close() {
	for i := len(l.spaces) - 1; i >= 0; i-- {
		if err := netns.Delete(l.spaces[i]); err != nil {
			l.t.Log(err)
		}
	}
}
