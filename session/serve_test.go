package session

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"kin/internal/testconn"
	"kin/keys"
)

// accepted is what a test listener hands Serve: a connection, or an error.
type accepted struct {
	conn net.Conn
	err  error
}

// chanListener hands over what the test sends it.
type chanListener chan accepted

func (l chanListener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case a := <-l:
		return a.conn, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// trackedConn records its Close.
type trackedConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// serving is a Server under Serve, and the connections it was given.
type serving struct {
	t      *testing.T
	host   *keys.Identity
	l      chanListener
	conns  []*trackedConn
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returned err
	err    error
}

// wait returns what Serve returned.
func (s *serving) wait() error {
	<-s.done
	return s.err
}

func startServe(t *testing.T, cfg ServerConfig) *serving {
	s := &serving{t: t, host: ident(t), l: make(chanListener), done: make(chan struct{})}
	cfg.Identity = s.host
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		s.err = srv.Serve(ctx, s.l)
		close(s.done)
	}()
	t.Cleanup(func() { cancel(); s.wait() })
	return s
}

// conn hands Serve the server end of a new loopback TCP connection and
// returns the client end, once Serve accepted it.
func (s *serving) conn() net.Conn {
	a, b := testconn.TCPPair(s.t)
	tc := &trackedConn{Conn: b}
	s.conns = append(s.conns, tc)
	s.l <- accepted{conn: tc}
	s.t.Cleanup(func() { a.Close() })
	return a
}

func (s *serving) dial(id *keys.Identity) *Client {
	c, err := NewClient(context.Background(), s.conn(), ClientConfig{Identity: id, HostKey: s.host.Public()})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// allClosed says whether Serve closed every connection it was given.
func (s *serving) allClosed() bool {
	for _, c := range s.conns {
		if !c.closed.Load() {
			return false
		}
	}
	return true
}

// silentService accepts TCP connections and never reads, writes or
// closes them.
func silentService(t *testing.T) (port int, addr string, got chan net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			got <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for len(got) > 0 {
			(<-got).Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port, ln.Addr().String(), got
}

// Serve serves every connection it accepts, and when ctx ends returns
// only after each has ended, even one forwarded to a local service that
// never closes its end.
func TestServeWaitsForItsConnections(t *testing.T) {
	webPort, webAddr := webServer(t, []byte("served"))
	silentPort, silentAddr, silent := silentService(t)
	bob := ident(t)
	s := startServe(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{webPort, silentPort}}}),
		Ports:   map[int]string{webPort: webAddr, silentPort: silentAddr},
	})
	c1, c2 := s.dial(bob), s.dial(bob)
	for _, c := range []*Client{c1, c2} {
		if got := forwardGet(t, c, webPort); string(got) != "served" {
			t.Fatalf("forwarded GET: %q", got)
		}
	}
	fc, err := c2.DialPort(context.Background(), silentPort)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	local := <-silent // the forwarded connection is up, and its service silent
	defer local.Close()

	s.cancel()
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if !s.allClosed() {
		t.Fatal("Serve returned before closing every connection")
	}
	if n, _ := io.Copy(io.Discard, local); n != 0 {
		t.Fatalf("the silent service got %d bytes", n)
	}
	c1.Wait()
	c2.Wait()
}

// A connection that never finishes its handshake ends with ctx.
func TestServeEndsStalledHandshakes(t *testing.T) {
	s := startServe(t, ServerConfig{})
	quiet := s.conn() // says nothing: the handshake waits
	s.cancel()
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if !s.allClosed() {
		t.Fatal("Serve returned before closing the stalled connection")
	}
	quiet.Close()
}

// A failing listener ends Serve with its error, and ends the connections
// it had started.
func TestServeReturnsListenerError(t *testing.T) {
	bob := ident(t)
	s := startServe(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public()}),
	})
	c := s.dial(bob)
	broken := errors.New("listener broke")
	s.l <- accepted{err: broken}
	if err := s.wait(); !errors.Is(err, broken) {
		t.Fatalf("Serve over a broken listener: %v", err)
	}
	if !s.allClosed() {
		t.Fatal("Serve returned before closing its connection")
	}
	c.Wait()
}

// A listener that has no more to give (io.EOF) lets the connections Serve
// started finish: the friend's connection keeps working, and Serve returns
// nil once it has ended.
func TestServeDrainsAfterTheLastConnection(t *testing.T) {
	bob := ident(t)
	port, addr, _ := silentService(t)
	s := startServe(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: addr},
	})
	c := s.dial(bob)
	s.l <- accepted{err: io.EOF}
	if err := c.CheckPort(context.Background(), port); err != nil {
		t.Fatalf("the connection ended with the listener: %v", err)
	}
	select {
	case <-s.done:
		t.Fatalf("Serve returned (%v) while its connection was still in use", s.err)
	default:
	}
	c.Close()
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after the listener's io.EOF: %v", err)
	}
	if !s.allClosed() {
		t.Fatal("Serve returned before closing its connection")
	}
}

// A forwarded port's connection names the addresses of the connection
// that carries it, not made-up ones.
func TestChannelConnAddressesAreTheCarriers(t *testing.T) {
	bob := ident(t)
	port, addr, _ := silentService(t)
	s := startServe(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: addr},
	})
	carrier := s.conn()
	c, err := NewClient(context.Background(), carrier, ClientConfig{Identity: bob, HostKey: s.host.Public()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.DialPort(context.Background(), port)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if pc.RemoteAddr().String() != carrier.RemoteAddr().String() || pc.LocalAddr().String() != carrier.LocalAddr().String() {
		t.Fatalf("port conn %v -> %v, carrier %v -> %v", pc.LocalAddr(), pc.RemoteAddr(), carrier.LocalAddr(), carrier.RemoteAddr())
	}
}
