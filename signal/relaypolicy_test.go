package signal

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// udpEcho answers every datagram on addr with itself and counts them.
func udpEcho(t *testing.T, addr string) (net.Addr, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr(), &got
}

// roundTrip sends msg through relay to addr and waits for the echo.
func roundTrip(t *testing.T, relay net.PacketConn, addr net.Addr, msg []byte) {
	t.Helper()
	if _, err := relay.WriteTo(msg, addr); err != nil {
		t.Fatalf("send to %s through the relay: %v", addr, err)
	}
	buf := make([]byte, 1500)
	relay.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no echo from %s through the relay: %v", addr, err)
		}
		if from.String() == addr.String() && bytes.Equal(buf[:n], msg) {
			return
		}
	}
}

// TestRelayIsNoWayIntoTheServersNetwork registers a key made a moment
// ago, takes the TURN credentials the signaling server hands it, and
// tries to reach UDP services on the signaling host through the relay:
// on its own address (the relay's, where only relay ports are open) and
// elsewhere on loopback. Nothing arrives, and /metrics counts the
// refusals; an address the operator allowed, and another allocation on
// the same relay, are reached.
func TestRelayIsNoWayIntoTheServersNetwork(t *testing.T) {
	secret := []byte("s3cret")
	stats := &RelayStats{}
	tn, err := ListenTURN("127.0.0.1:0", TURNConfig{
		Secret:     secret,
		Stats:      stats,
		RelayAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tn.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("TURN: %v", err)
		}
	})
	e := newEnv(t, ServerConfig{ICEServers: ICEServersFor(tn.ICEServers(), secret), RelayStats: stats})

	c := e.client(ident(t)) // a fresh key, friend of nobody
	var user, pass, addr string
	for _, s := range c.Registration().ICEServers {
		if u := s.URLs[0]; strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "?transport=udp") {
			user, pass = s.Username, s.Credential
			addr = strings.TrimSuffix(strings.TrimPrefix(u, "turn:"), "?transport=udp")
		}
	}
	if user == "" {
		t.Fatalf("registration handed out no TURN credentials: %+v", c.Registration().ICEServers)
	}
	relay, err := allocate(t, addr, user, pass)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()

	sameIP, sameIPGot := udpEcho(t, "127.0.0.1:0")   // the relay's own address, not a relay port
	otherLo, otherLoGot := udpEcho(t, "127.0.0.3:0") // loopback, not allowed
	allowed, allowedGot := udpEcho(t, "127.0.0.2:0") // --relay-allow 127.0.0.2/32

	msg := []byte("knock knock")
	for range 3 {
		relay.WriteTo(msg, sameIP) // permission granted (relay IP), packets dropped
	}
	if _, err := relay.WriteTo(msg, otherLo); err == nil {
		t.Errorf("the relay granted a permission for %s", otherLo)
	}
	// The relay handles a client's packets in order: once the echo from the
	// allowed address is back, the refused ones have been dealt with.
	roundTrip(t, relay, allowed, msg)
	if n := sameIPGot.Load(); n != 0 {
		t.Errorf("%d datagrams reached %s on the signaling host through the relay", n, sameIP)
	}
	if n := otherLoGot.Load(); n != 0 {
		t.Errorf("%d datagrams reached %s on the signaling host through the relay", n, otherLo)
	}
	if allowedGot.Load() == 0 {
		t.Error("the allowed address got nothing")
	}
	if n := stats.RefusedPeers.Load(); n < 4 {
		t.Errorf("%d refusals counted, want at least 4 (3 packets, 1 permission)", n)
	}
	if got := metric(t, e.srv, "kin_turn_refused_peers_total"); got != float64(stats.RefusedPeers.Load()) {
		t.Errorf("/metrics says %v refusals, the relay counted %d", got, stats.RefusedPeers.Load())
	}

	// Two peers that both need the relay talk relay to relay: the relay's
	// own address is open on its relay ports.
	other, err := allocate(t, addr, user, pass)
	if err != nil {
		t.Fatalf("second allocation: %v", err)
	}
	defer other.Close()
	other.WriteTo([]byte("open"), relay.LocalAddr()) // other's permission for relay's address
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := other.ReadFrom(buf)
			if err != nil {
				return
			}
			other.WriteTo(buf[:n], from)
		}
	}()
	roundTrip(t, relay, other.LocalAddr(), []byte("relay to relay"))
}

func TestRelayPeerPolicy(t *testing.T) {
	p := newPeerPolicy(net.ParseIP("198.51.100.7"), []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		[]netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("10.1.0.5")})
	p.addPort(50000)
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8:53", true},
		{"[2606:4700::1111]:53", true},
		{"127.0.0.1:9999", false},
		{"[::1]:9999", false},
		{"[::ffff:127.0.0.1]:9999", false},
		{"10.0.0.1:1", false},
		{"172.16.0.1:1", false},
		{"192.168.1.1:1", false},
		{"[fd00::1]:1", false},
		{"100.64.0.1:1", false},
		{"169.254.169.254:80", false}, // cloud metadata
		{"[fe80::1]:1", false},
		{"224.0.0.251:5353", false},
		{"[ff02::1]:1", false},
		{"0.0.0.0:1", false},
		{"[::]:1", false},
		{"255.255.255.255:1", false},
		{"[64:ff9b::7f00:1]:1", false}, // NAT64 of 127.0.0.1
		{"198.51.100.7:50000", true},   // a live relay port
		{"198.51.100.7:7000", false},   // the server's own services
		{"198.51.100.7:3478", false},
		{"203.0.113.9:1", false}, // another address of the server
		{"10.1.2.3:1", true},     // allowed by the operator
		{"10.1.0.5:1", true},     // allowed, though the server's own
	} {
		a := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(c.addr))
		if got := p.permitAddr(a); got != c.ok {
			t.Errorf("%s: permitted %v, want %v", c.addr, got, c.ok)
		}
	}
	p.removePort(50000)
	if p.permitAddr(net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.7:50000"))) {
		t.Error("a closed relay port stays open")
	}
}

// FuzzRelayPeerPolicy: whatever address a client names, the relay never
// talks to one that is not public by net's own predicates, unless allowed.
func FuzzRelayPeerPolicy(f *testing.F) {
	for _, s := range [][]byte{{127, 0, 0, 1}, {10, 0, 0, 1}, {8, 8, 8, 8}, netip.MustParseAddr("::ffff:192.168.0.1").AsSlice(), netip.MustParseAddr("fe80::1").AsSlice()} {
		f.Add(s, uint16(9999))
	}
	p := newPeerPolicy(net.ParseIP("198.51.100.7"), nil, []netip.Addr{netip.MustParseAddr("198.51.100.7")})
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		u := ip.Unmap()
		if !p.permitAddr(net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port))) {
			return
		}
		if u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsMulticast() || u.IsUnspecified() ||
			u == netip.MustParseAddr("198.51.100.7") || netip.MustParsePrefix("100.64.0.0/10").Contains(u) {
			t.Fatalf("relay would talk to %s port %d", ip, port)
		}
	})
}
