package session

import (
	"context"
	"net"
)

// LocalPort is the near end of a peer's port (kin connect): connections
// on a TCP listener, or datagrams on a UDP socket, carried to the port.
type LocalPort struct {
	port int
	udp  bool
	ln   net.Listener
	pc   *net.UDPConn
}

// ListenLocal listens at addr for what goes to the peer's port (TCP, or
// UDP when udp is set).
func ListenLocal(addr string, port int, udp bool) (*LocalPort, error) {
	if !udp {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return &LocalPort{port: port, ln: ln}, nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	return &LocalPort{port: port, udp: true, pc: pc}, nil
}

// String names the local address, with /udp for UDP.
func (l *LocalPort) String() string {
	if l.pc != nil {
		return l.pc.LocalAddr().String() + "/udp"
	}
	return l.ln.Addr().String()
}

// Close stops listening.
func (l *LocalPort) Close() error {
	if l.pc != nil {
		return l.pc.Close()
	}
	return l.ln.Close()
}

// Check asks the peer at the other end of c whether the port is ours to
// use.
func (l *LocalPort) Check(ctx context.Context, c *Client) error {
	if l.udp {
		return c.CheckUDPPort(ctx, l.port)
	}
	return c.CheckPort(ctx, l.port)
}

// Forward carries the local end to the peer's port over c until ctx ends
// or the connection does.
func (l *LocalPort) Forward(ctx context.Context, c *Client) error {
	if l.pc != nil {
		return c.ForwardUDP(ctx, l.pc, l.port, UDPOptions{})
	}
	return c.Forward(ctx, l.ln, l.port)
}
