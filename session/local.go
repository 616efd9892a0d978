package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// LocalPort is the near end of a peer's port (kin connect): connections
// on a TCP listener, or datagrams on a UDP socket, carried to the port. It
// stays open across connections to the peer: a TCP connection made while
// there is none waits (up to LocalWait) for the next one.
type LocalPort struct {
	port int
	udp  bool
	ln   net.Listener
	pc   *net.UDPConn

	mu      sync.Mutex
	cur     *liveClient   // the connection TCP connections use; nil while there is none
	changed chan struct{} // closed and replaced when cur changes
	wg      sync.WaitGroup
}

// LocalWait is how long a local TCP connection waits for a connection to
// the peer before it is closed.
const LocalWait = 30 * time.Second

// liveClient is a connection to the peer while it lasts: ctx ends when it
// is lost, which closes the local connections it carries.
type liveClient struct {
	c   *Client
	ctx context.Context
}

// ListenLocal listens at addr for what goes to the peer's port (TCP, or
// UDP when udp is set).
func ListenLocal(addr string, port int, udp bool) (*LocalPort, error) {
	l := &LocalPort{port: port, udp: udp, changed: make(chan struct{})}
	if !udp {
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
func (l *LocalPort) String() string {
	if l.pc != nil {
		return l.pc.LocalAddr().String() + "/udp"
	}
	return l.ln.Addr().String()
}

// Start accepts TCP connections until Close or ctx ends; each is carried
// to the peer by the connection Forward serves at the time. A UDP port
// needs no Start.
func (l *LocalPort) Start(ctx context.Context, log *slog.Logger) {
	if l.ln == nil {
		return
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
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
				if err := lc.c.ForwardConn(lc.ctx, local, l.port); err != nil && lc.ctx.Err() == nil {
					log.Warn("forwarded connection failed", "port", l.port, "err", err)
				}
			}()
		}
	}()
}

// client waits (up to LocalWait) for a connection to the peer.
func (l *LocalPort) client(ctx context.Context) *liveClient {
	t := time.NewTimer(LocalWait)
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

func (l *LocalPort) set(lc *liveClient) {
	l.mu.Lock()
	l.cur = lc
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Close stops listening and waits for the connections it carries.
func (l *LocalPort) Close() error {
	var err error
	if l.pc != nil {
		err = l.pc.Close()
	} else {
		err = l.ln.Close()
	}
	l.wg.Wait()
	return err
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
// (nil) or the connection does (its error). The local end stays open for
// the next connection.
func (l *LocalPort) Forward(ctx context.Context, c *Client) error {
	if l.pc != nil {
		return c.ForwardUDP(ctx, l.pc, l.port, UDPOptions{})
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
