package cmd

// UDP in kin share and kin connect: PORT/udp, as docker and firewalls write it.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

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
// connections on a TCP listener, or datagrams on a UDP socket. It stays
// open across reconnections: a TCP connection made while kin connect is
// reconnecting waits (up to connectTimeout) for the connection to be back.
type localEnd struct {
	port sharedPort
	ln   net.Listener
	pc   *net.UDPConn

	mu      sync.Mutex
	cur     *liveClient   // the connection TCP connections use; nil while there is none
	changed chan struct{} // closed and replaced when cur changes
	wg      sync.WaitGroup
}

// liveClient is a connection to the peer while it lasts: ctx ends when it
// is lost, which closes the local connections it carries.
type liveClient struct {
	c   *session.Client
	ctx context.Context
}

func listenLocal(addr string, port sharedPort) (*localEnd, error) {
	l := &localEnd{port: port, changed: make(chan struct{})}
	if !port.udp {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		l.ln = ln
		return l, nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	l.pc = pc
	return l, nil
}

// String names the local address, with /udp for UDP.
func (l *localEnd) String() string {
	if l.pc != nil {
		return l.pc.LocalAddr().String() + "/udp"
	}
	return l.ln.Addr().String()
}

// start accepts TCP connections until Close; each is carried to the peer
// by the connection forward serves at the time.
func (l *localEnd) start(ctx context.Context, log *slog.Logger) {
	if l.ln == nil {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			local, err := l.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
					return
				}
				log.Warn("accept", "err", err) // e.g. out of file descriptors: try again shortly
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return
				}
				continue
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				lc := l.client(ctx)
				if lc == nil {
					local.Close()
					return
				}
				if err := lc.c.ForwardConn(lc.ctx, local, l.port.port); err != nil && lc.ctx.Err() == nil {
					log.Warn("forwarded connection failed", "port", l.port.port, "err", err)
				}
			}()
		}
	}()
}

// client waits (up to connectTimeout) for a connection to the peer.
func (l *localEnd) client(ctx context.Context) *liveClient {
	t := time.NewTimer(connectTimeout)
	defer t.Stop()
	for {
		l.mu.Lock()
		cur, changed := l.cur, l.changed
		l.mu.Unlock()
		if cur != nil {
			return cur
		}
		select {
		case <-changed:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (l *localEnd) set(lc *liveClient) {
	l.mu.Lock()
	l.cur = lc
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Close closes the local end and waits for the connections it carries.
func (l *localEnd) Close() error {
	var err error
	if l.pc != nil {
		err = l.pc.Close()
	} else {
		err = l.ln.Close()
	}
	l.wg.Wait()
	return err
}

// check asks the peer whether the port is ours to use.
func (l *localEnd) check(ctx context.Context, c *session.Client) error {
	if l.port.udp {
		return c.CheckUDPPort(ctx, l.port.port)
	}
	return c.CheckPort(ctx, l.port.port)
}

// forward serves the local end through c until ctx ends (nil) or the
// connection does (its error). The local end stays open for the next one.
func (l *localEnd) forward(ctx context.Context, c *session.Client) error {
	if l.pc != nil {
		return c.ForwardUDP(ctx, l.pc, l.port.port, session.UDPOptions{})
	}
	cctx, cancel := context.WithCancel(ctx)
	l.set(&liveClient{c: c, ctx: cctx})
	defer func() {
		l.set(nil)
		cancel() // closes the local connections it carried
	}()
	lost := make(chan error, 1)
	go func() { lost <- c.Wait() }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	}
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
