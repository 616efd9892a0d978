// Package netcheck finds out what the network between this machine and its
// STUN/TURN servers does to UDP: whether UDP gets out at all, which public
// address this machine gets, whether its NAT keeps one mapping for every
// destination, whether it lets in packets from where it never sent, and
// whether the relays answer and accept its credentials. kin doctor prints
// the report.
package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"

	"kin/pionlog"
	"kin/signal"
)

// NAT is what stands between this machine and the internet, as seen by UDP.
type NAT string

const (
	// NoNAT: the STUN server sees one of this machine's own addresses.
	NoNAT NAT = "none (public address)"
	// FullCone: one public port for every destination, and anyone may send to it.
	FullCone NAT = "full cone"
	// RestrictedCone: one public port for every destination; only those
	// this machine sent to may answer (most home routers).
	RestrictedCone NAT = "port-restricted cone"
	// Cone: one public port for every destination; how it filters is
	// unknown (the STUN server cannot answer from another port).
	Cone NAT = "cone"
	// Symmetric: a new public port per destination.
	Symmetric NAT = "symmetric"
	// UDPBlocked: no STUN server answered over UDP.
	UDPBlocked NAT = "UDP blocked"
	// Unknown: there was no STUN server to ask.
	Unknown NAT = "unknown (no STUN server)"
)

// Advice says what a NAT kind means for connecting to friends.
func (n NAT) Advice() string {
	switch n {
	case NoNAT, FullCone:
		return "direct connections work with every peer"
	case RestrictedCone, Cone:
		return "direct connections work with most peers; a peer behind a symmetric NAT goes through the relay"
	case Symmetric:
		return "direct connections work only with peers that have a public address or a full-cone NAT; others go through the relay"
	case UDPBlocked:
		return "no direct connections: every connection goes through a TURN relay over TCP"
	}
	return "kin cannot tell; ask the signaling server's operator for STUN (kin signal --turn)"
}

// Mapping is the address one STUN server saw.
type Mapping struct {
	Server string // host:port
	Seen   string // ip:port, or "" when it did not answer
}

// Relay is the outcome of one TURN allocation.
type Relay struct {
	URL   string
	Relay string // the relayed address when it worked
	Err   error
}

// Report is what Check found.
type Report struct {
	Mappings []Mapping
	NAT      NAT
	Relays   []Relay
}

// timeouts for one STUN exchange.
const (
	stunTries = 4
	stunWait  = 400 * time.Millisecond
)

// Check asks every STUN server in servers for this machine's public
// address, tests the NAT's filtering with a change-port request, and makes
// a TURN allocation on each TURN server. It only talks to those servers.
func Check(ctx context.Context, servers []signal.ICEServer) (*Report, error) {
	r := &Report{NAT: Unknown}
	var stuns []*net.UDPAddr
	for _, s := range servers {
		for _, raw := range s.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil {
				return nil, fmt.Errorf("ICE server %q: %w", raw, err)
			}
			hp := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
			switch u.Scheme {
			case stun.SchemeTypeSTUN:
				a, err := net.ResolveUDPAddr("udp4", hp)
				if err != nil {
					return nil, fmt.Errorf("STUN server %s: %w", hp, err)
				}
				stuns = append(stuns, a)
			case stun.SchemeTypeTURN:
				r.Relays = append(r.Relays, allocate(ctx, raw, u, s.Username, s.Credential))
			}
		}
	}
	if len(stuns) == 0 {
		return r, nil
	}
	conn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return nil, fmt.Errorf("open a UDP socket: %w", err)
	}
	defer conn.Close()
	var seen []*net.UDPAddr
	for _, s := range stuns {
		m := Mapping{Server: s.String()}
		if a, _, err := binding(ctx, conn, s, false); err == nil {
			m.Seen = a.String()
			seen = append(seen, a)
		}
		r.Mappings = append(r.Mappings, m)
	}
	r.NAT = classify(ctx, seen, stuns)
	return r, nil
}

// STUNOnly is servers without their TURN URLs: what to Check for the NAT
// alone, quickly, without allocating relays.
func STUNOnly(servers []signal.ICEServer) []signal.ICEServer {
	var stuns []signal.ICEServer
	for _, s := range servers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "stun:") {
				stuns = append(stuns, signal.ICEServer{URLs: []string{u}})
			}
		}
	}
	return stuns
}

// classify names the NAT from the mappings seen from one socket.
func classify(ctx context.Context, seen, stuns []*net.UDPAddr) NAT {
	if len(seen) == 0 {
		return UDPBlocked
	}
	for _, a := range seen[1:] {
		if a.String() != seen[0].String() {
			return Symmetric
		}
	}
	if isLocal(seen[0].IP) {
		return NoNAT
	}
	// Filtering: from a fresh socket that never sent anywhere else, ask the
	// last server to answer from its other port.
	conn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return Cone
	}
	defer conn.Close()
	server := stuns[len(stuns)-1]
	_, from, err := binding(ctx, conn, server, true)
	switch {
	case err != nil:
		return RestrictedCone
	case from.String() == server.String():
		return Cone // the server ignored the change request
	}
	return FullCone
}

func isLocal(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

var errNoAnswer = errors.New("no answer")

// binding sends a binding request to server from conn, retrying, and
// returns the address the server saw and where the answer came from.
func binding(ctx context.Context, conn net.PacketConn, server *net.UDPAddr, changePort bool) (*net.UDPAddr, net.Addr, error) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if changePort {
		req.Add(stun.AttrChangeRequest, []byte{0, 0, 0, signal.ChangePort})
	}
	req.Encode()
	buf := make([]byte, 1500)
	for range stunTries {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if _, err := conn.WriteTo(req.Raw, server); err != nil {
			return nil, nil, fmt.Errorf("send to %s: %w", server, err)
		}
		conn.SetReadDeadline(time.Now().Add(stunWait))
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				break // next try
			}
			var m stun.Message
			if stun.Decode(buf[:n], &m) != nil || m.TransactionID != req.TransactionID {
				continue
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(&m); err != nil {
				return nil, nil, fmt.Errorf("STUN answer from %s: %w", from, err)
			}
			return &net.UDPAddr{IP: xor.IP, Port: xor.Port}, from, nil
		}
	}
	return nil, nil, errNoAnswer
}

// allocate makes one TURN allocation over the URL's transport and frees it.
func allocate(ctx context.Context, raw string, u *stun.URI, user, pass string) Relay {
	r := Relay{URL: raw}
	hp := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	var conn net.PacketConn
	if u.Proto == stun.ProtoTypeTCP {
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err := d.DialContext(ctx, "tcp4", hp)
		if err != nil {
			r.Err = fmt.Errorf("TCP connect: %w", err)
			return r
		}
		conn = turn.NewSTUNConn(c)
	} else {
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			r.Err = err
			return r
		}
		conn = c
	}
	defer conn.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: hp, TURNServerAddr: hp, Conn: conn,
		Username: user, Password: pass, RTO: 300 * time.Millisecond,
		LoggerFactory: pionlog.Factory(nil),
	})
	if err != nil {
		r.Err = err
		return r
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		r.Err = err
		return r
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay, err := client.Allocate()
		if err != nil {
			r.Err = err
			return
		}
		r.Relay = relay.LocalAddr().String()
		relay.Close()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		client.Close()
		<-done
		r.Err = ctx.Err()
	}
	return r
}
