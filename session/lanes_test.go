package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"kin/internal/testconn"
	"kin/keys"
	"kin/session/files"
)

// laneTCP is a connection that carries extra lanes, as transport.Conn on
// QUIC does: every lane is a new loopback TCP connection to the peer.
type laneTCP struct {
	net.Conn
	t      testing.TB
	peer   *laneTCP
	in     chan net.Conn
	sin    chan net.Conn // streams beside the connection
	first  bool          // the pair's first end
	bad    bool          // Binding differs from the peer's
	mu     sync.Mutex
	opened []net.Conn
	sopen  int // streams opened
}

func laneTCPPair(t testing.TB) (*laneTCP, *laneTCP) {
	a, b := testconn.TCPPair(t)
	la := &laneTCP{Conn: a, t: t, in: make(chan net.Conn, 64), sin: make(chan net.Conn, 64), first: true}
	lb := &laneTCP{Conn: b, t: t, in: make(chan net.Conn, 64), sin: make(chan net.Conn, 64)}
	la.peer, lb.peer = lb, la
	return la, lb
}

func (c *laneTCP) HasLanes() bool { return true }

// Binding is the same on both ends (the pair's first end's address),
// unless bad is set: then it differs, as with someone in the middle.
func (c *laneTCP) Binding() []byte {
	if c.bad {
		return []byte("not the peer's")
	}
	a := c.LocalAddr().String() + " " + c.RemoteAddr().String()
	if c.first {
		a = c.RemoteAddr().String() + " " + c.LocalAddr().String()
	}
	return []byte(a)
}

func (c *laneTCP) OpenLane(ctx context.Context) (net.Conn, error) {
	a, b := testconn.TCPPair(c.t)
	c.mu.Lock()
	c.opened = append(c.opened, a)
	c.mu.Unlock()
	c.peer.in <- b
	return a, nil
}

func (c *laneTCP) AcceptLane(ctx context.Context) (net.Conn, error) {
	select {
	case l := <-c.in:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *laneTCP) OpenStream(ctx context.Context) (net.Conn, error) {
	a, b := testconn.TCPPair(c.t)
	c.mu.Lock()
	c.sopen++
	c.mu.Unlock()
	c.peer.sin <- b
	return a, nil
}

func (c *laneTCP) AcceptStream(ctx context.Context) (net.Conn, error) {
	select {
	case s := <-c.sin:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *laneTCP) streamsOpened() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sopen
}

// dialLanes is env.dial over a connection with lanes.
func (e *env) dialLanes(id *keys.Identity, secret []byte) (*Client, *laneTCP) {
	return e.dialLanesBound(id, secret, true)
}

// dialLanesBound is dialLanes where, unless bound, the two ends' bindings
// differ (someone in the middle of the QUIC connection).
func (e *env) dialLanesBound(id *keys.Identity, secret []byte, bound bool) (*Client, *laneTCP) {
	srv, err := NewServer(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	a, b := laneTCPPair(e.t)
	a.bad = !bound
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		srv.ServeConn(e.ctx, b, "test")
	}()
	c, err := NewClient(e.ctx, a, ClientConfig{Identity: id, HostKey: e.host.Public(), Secret: secret})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c, a
}

// pushAndPull pushes a 20 MiB file to a friend's inbox and pulls it as a
// ticket holder, with KIN_LANES=4, over connections whose bindings match
// (bound) or not; it checks what arrived (SHA-256) and returns the lanes
// each side opened.
func pushAndPull(t *testing.T, bound bool) (pushLanes, pushOpened, pullOpened int) {
	t.Setenv("KIN_LANES", "4")
	src := t.TempDir()
	data := make([]byte, 20<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	plan, err := files.Scan(filepath.Join(src, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	inbox := t.TempDir()
	mom := ident(t)
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "mom", Key: mom.Public(), Perms: keys.Permissions{Files: true}}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Files: true}, keys.SecretEqual(s, secret)
		},
		Inbox:  &files.Inbox{Dir: inbox},
		Outbox: plan,
	})
	c, conn := e.dialLanesBound(mom, nil, bound)
	st, err := c.Push(e.ctx, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(inbox, "big.bin")); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("pushed file differs")
	}
	// The other way: the server sends, the client hands out the secrets.
	c2, conn2 := e.dialLanesBound(ident(t), secret, bound)
	dst := t.TempDir()
	if _, err := c2.Pull(e.ctx, &files.Inbox{Dir: dst}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "big.bin")); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("pulled file differs")
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	conn2.peer.mu.Lock()
	defer conn2.peer.mu.Unlock()
	return st.Lanes, len(conn.opened), len(conn2.peer.opened)
}

// Push and pull spread a big file over the forced number of lanes, and it
// arrives whole.
func TestFilesOnLanes(t *testing.T) {
	lanes, pushed, pulled := pushAndPull(t, true)
	if lanes != 4 || pushed != 4 {
		t.Errorf("push used %d lanes (%d opened), want 4", lanes, pushed)
	}
	if pulled != 4 {
		t.Errorf("the server opened %d lanes, want 4", pulled)
	}
}

// Lanes carry bytes in QUIC alone, whose certificates came through the
// signaling server: when the two ends' bindings differ (someone in the
// middle terminates QUIC), no lane is opened or taken either way, and the
// files still arrive, inside SSH.
func TestNoLanesWhenTheBindingsDiffer(t *testing.T) {
	lanes, pushed, pulled := pushAndPull(t, false)
	if lanes > 1 || pushed != 0 || pulled != 0 {
		t.Errorf("push used %d lanes (%d opened), pull %d opened; want none", lanes, pushed, pulled)
	}
}

// A lane that presents a wrong secret, or none, is closed and counted;
// the right one is handed to its transfer, once.
func TestWrongLaneSecretIsRefused(t *testing.T) {
	a, b := laneTCPPair(t)
	defer a.Close()
	defer b.Close()
	opener, taker := newLaneHub(a, discardLog()), newLaneHub(b, discardLog())
	defer taker.close()
	tok := bytes.Repeat([]byte{1}, files.TokenSize)
	got, stop := taker.Expect([][]byte{tok})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wrong, err := opener.Open(ctx, bytes.Repeat([]byte{2}, files.TokenSize))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if n, err := wrong.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the refused lane reads %d, %v", n, err)
	}
	short, _ := a.OpenLane(ctx) // gives up before its secret is complete
	defer short.Close()
	short.Write([]byte{1, 1, 1})
	short.(*net.TCPConn).CloseWrite()
	if _, err := short.Read(make([]byte, 1)); err == nil {
		t.Fatal("the short lane was not closed")
	}
	right, err := opener.Open(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer right.Close()
	var l io.ReadWriteCloser
	select {
	case l = <-got:
	case <-ctx.Done():
		t.Fatal("the lane with the right secret never arrived")
	}
	defer l.Close()
	right.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(l, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("lane carries %q, %v", buf, err)
	}
	again, _ := opener.Open(ctx, tok) // used once already
	defer again.Close()
	if _, err := again.Read(make([]byte, 1)); err == nil { // returns when the hub has closed it
		t.Fatal("a secret worked twice")
	}
	if n := taker.refused.Load(); n != 3 {
		t.Errorf("refused %d lanes, want 3 (wrong, short, reused)", n)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
