package cmd

// UDP in kin share and kin connect: PORT/udp, as docker and firewalls write it.

import (
	"context"
	"net"
	"strconv"

	"kin/keys"
	"kin/session"
)

// sharedPort is the port kin share shares: TCP, or UDP with /udp.
type sharedPort struct {
	port int
	udp  bool
}

func (p sharedPort) String() string { return keys.FormatPort(p.port, p.udp) }

// target is where the port's traffic goes on this machine. UDP goes to
// IPv4 loopback: a datagram cannot try ::1 first as a TCP dial does.
func (p sharedPort) target() string {
	if p.udp {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	}
	return net.JoinHostPort("localhost", strconv.Itoa(p.port))
}

// perms is what a ticket for the port grants.
func (p sharedPort) perms() keys.Permissions {
	if p.udp {
		return keys.Permissions{UDPPorts: []int{p.port}}
	}
	return keys.Permissions{Ports: []int{p.port}}
}

// serve puts the port into a session config.
func (p sharedPort) serve(cfg *session.ServerConfig) {
	if p.udp {
		cfg.UDPPorts = map[int]string{p.port: p.target()}
	} else {
		cfg.Ports = map[int]string{p.port: p.target()}
	}
}

func (p sharedPort) allows(perms keys.Permissions) bool {
	if p.udp {
		return perms.AllowsUDPPort(p.port)
	}
	return perms.AllowsPort(p.port)
}

// localEnd is where kin connect takes what goes to the peer's port:
// connections on a TCP listener, or datagrams on a UDP socket.
type localEnd struct {
	port sharedPort
	ln   net.Listener
	pc   *net.UDPConn
}

func listenLocal(addr string, port sharedPort) (*localEnd, error) {
	if !port.udp {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return &localEnd{port: port, ln: ln}, nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	return &localEnd{port: port, pc: pc}, nil
}

// String names the local address, with /udp for UDP.
func (l *localEnd) String() string {
	if l.pc != nil {
		return l.pc.LocalAddr().String() + "/udp"
	}
	return l.ln.Addr().String()
}

func (l *localEnd) Close() error {
	if l.pc != nil {
		return l.pc.Close()
	}
	return l.ln.Close()
}

// check asks the peer whether the port is ours to use.
func (l *localEnd) check(ctx context.Context, c *session.Client) error {
	if l.port.udp {
		return c.CheckUDPPort(ctx, l.port.port)
	}
	return c.CheckPort(ctx, l.port.port)
}

// forward serves the local end until ctx ends or the connection does.
func (l *localEnd) forward(ctx context.Context, c *session.Client) error {
	if l.pc != nil {
		return c.ForwardUDP(ctx, l.pc, l.port.port, session.UDPOptions{})
	}
	return c.Forward(ctx, l.ln, l.port.port)
}

// friendsAllowed names the friends allowed the port.
func friendsAllowed(f *keys.Friends, p sharedPort) []string {
	var names []string
	for _, fr := range f.List() {
		if p.allows(fr.Perms) {
			names = append(names, fr.Name)
		}
	}
	return names
}
