package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"kin/internal/testconn"
	"kin/keys"
	"kin/session/files"
	"kin/session/shell"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ident(t testing.TB) *keys.Identity {
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// env is one sharer (the server) and a way to connect to it.
type env struct {
	t       testing.TB
	host    *keys.Identity
	cfg     ServerConfig
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	serveMu sync.Mutex
	served  []error
}

func newEnv(t testing.TB, cfg ServerConfig) *env {
	e := &env{t: t, host: ident(t)}
	cfg.Identity = e.host
	e.cfg = cfg
	e.ctx, e.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(func() { e.cancel(); e.wg.Wait() })
	return e
}

// dial connects as id (with an optional ticket secret) to the server, or
// to whoever hostKey's server is.
func (e *env) dial(id *keys.Identity, secret []byte) (*Client, error) {
	srv, err := NewServer(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	a, b := testconn.TCPPair(e.t)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		err := srv.ServeConn(e.ctx, b, "test")
		e.serveMu.Lock()
		e.served = append(e.served, err)
		e.serveMu.Unlock()
	}()
	c, err := NewClient(e.ctx, a, ClientConfig{Identity: id, HostKey: e.host.Public(), Secret: secret})
	if err != nil {
		a.Close()
		return nil, err
	}
	e.t.Cleanup(func() { c.Close() })
	return c, nil
}

func friends(t testing.TB, list ...keys.Friend) func() *keys.Friends {
	f, _ := keys.ParseFriends(nil)
	for _, fr := range list {
		if err := f.Add(fr); err != nil {
			t.Fatal(err)
		}
	}
	return func() *keys.Friends { return f }
}

func webServer(t testing.TB, body []byte) (int, string) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	t.Cleanup(s.Close)
	u := strings.TrimPrefix(s.URL, "http://")
	_, p, _ := net.SplitHostPort(u)
	port, _ := strconv.Atoi(p)
	return port, u
}

func forwardGet(t testing.TB, c *Client, port int) []byte {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Forward(ctx, ln, port) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forward: %v", err)
		}
	}()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

func TestFriendReachesAllowedPort(t *testing.T) {
	body := make([]byte, 8<<20)
	rand.Read(body)
	port, addr := webServer(t, body)
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: addr},
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPort(e.ctx, port); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := forwardGet(t, c, port); sha256.Sum256(got) != sha256.Sum256(body) {
				t.Error("8 MiB body differs")
			}
		}()
	}
	wg.Wait()
}

func TestTicketGrantsOnlyItsPort(t *testing.T) {
	p1, a1 := webServer(t, []byte("one"))
	p2, a2 := webServer(t, []byte("two"))
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{p1}}, keys.SecretEqual(s, secret)
		},
		Ports: map[int]string{p1: a1, p2: a2},
	})
	c, err := e.dial(ident(t), secret)
	if err != nil {
		t.Fatal(err)
	}
	if got := forwardGet(t, c, p1); string(got) != "one" {
		t.Fatalf("got %q", got)
	}
	if err := c.CheckPort(e.ctx, p2); !errors.Is(err, ErrPortNotAllowed) {
		t.Fatalf("check other port: %v", err)
	}
	if _, err := c.DialPort(e.ctx, p2); !errors.Is(err, ErrPortNotAllowed) {
		t.Fatalf("dial other port: %v", err)
	}
	// Other hosts are never reachable, whatever the port.
	if _, _, err := c.ssh.OpenChannel("direct-tcpip", sshMarshalDirect("10.0.0.1", p1)); err == nil {
		t.Fatal("reached another host")
	}
	// A ticket grants no files and no shell.
	if _, err := c.Push(e.ctx, &files.Plan{}, nil); !errors.Is(err, ErrFilesNotAllowed) {
		t.Fatalf("push: %v", err)
	}
	if _, err := c.NewSession(); !errors.Is(err, ErrShellNotAllowed) {
		t.Fatalf("shell: %v", err)
	}
	// The same connection still works for its port.
	if got := forwardGet(t, c, p1); string(got) != "one" {
		t.Fatalf("after refusals: %q", got)
	}
}

func TestRefusals(t *testing.T) {
	port, addr := webServer(t, []byte("x"))
	bob, eve := ident(t), ident(t)
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public()}), // no permissions
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{port}}, keys.SecretEqual(s, secret)
		},
		Ports: map[int]string{port: addr},
	})
	if _, err := e.dial(eve, nil); !errors.Is(err, ErrAuthRefused) || !strings.Contains(err.Error(), "does not know your key") {
		t.Errorf("stranger: %v", err)
	}
	if _, err := e.dial(eve, keys.NewSecret()); !errors.Is(err, ErrAuthRefused) || !strings.Contains(err.Error(), "ticket") {
		t.Errorf("wrong secret: %v", err)
	}
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPort(e.ctx, port); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("friend without the port: %v", err)
	}
}

func TestExposedPortsLimitEvenPortStar(t *testing.T) {
	port, addr := webServer(t, []byte("x"))
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{AllPorts: true}}),
		Ports:   map[int]string{port: addr},
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPort(e.ctx, port+1); !errors.Is(err, ErrPortNotAllowed) {
		t.Fatalf("unexposed port: %v", err)
	}
}

func TestWrongHostKeyIsRefused(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	srv, _ := NewServer(e.cfg)
	a, b := testconn.TCPPair(t)
	e.wg.Add(1)
	go func() { defer e.wg.Done(); srv.ServeConn(e.ctx, b, "x") }()
	meant := ident(t) // the peer we meant; the signaling server sent us elsewhere
	_, err := NewClient(e.ctx, a, ClientConfig{Identity: ident(t), HostKey: meant.Public(), Secret: keys.NewSecret()})
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "signaling server may be misbehaving") {
		t.Fatalf("got %v", err)
	}
}

func TestLocalServiceDownKeepsConnection(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	port, addr := webServer(t, []byte("alive"))
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{AllPorts: true}}),
		Ports:   map[int]string{dead: fmt.Sprintf("127.0.0.1:%d", dead), port: addr},
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DialPort(e.ctx, dead); err == nil || !strings.Contains(err.Error(), "nothing answers") {
		t.Fatalf("dead port: %v", err)
	}
	if got := forwardGet(t, c, port); string(got) != "alive" {
		t.Fatalf("after a refused port: %q", got)
	}
}

func TestFriendsFileEditsApply(t *testing.T) {
	port, addr := webServer(t, []byte("x"))
	bob := ident(t)
	var mu sync.Mutex
	current := friends(t)()
	e := newEnv(t, ServerConfig{
		Friends: func() *keys.Friends { mu.Lock(); defer mu.Unlock(); return current },
		Ports:   map[int]string{port: addr},
	})
	if _, err := e.dial(bob, nil); !errors.Is(err, ErrAuthRefused) {
		t.Fatalf("before adding: %v", err)
	}
	mu.Lock()
	current = friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}})()
	mu.Unlock()
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatalf("after adding: %v", err)
	}
	if err := c.CheckPort(e.ctx, port); err != nil {
		t.Fatal(err)
	}
}

func TestFilesPushAndPull(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "photo.jpg"), data, 0o644)
	plan, err := files.Scan(filepath.Join(src, "photo.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	inbox := t.TempDir()
	mom, stranger := ident(t), ident(t)
	var offered []string
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Friends: friends(t,
			keys.Friend{Name: "mom", Key: mom.Public(), Perms: keys.Permissions{Files: true}},
			keys.Friend{Name: "stranger", Key: stranger.Public()}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Files: true}, keys.SecretEqual(s, secret)
		},
		Inbox:  &files.Inbox{Dir: inbox},
		Outbox: plan,
		Files:  FileHooks{Offered: func(g Grant, o files.Offer) error { offered = append(offered, g.Name); return nil }},
	})
	c, err := e.dial(mom, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(e.ctx, plan, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(inbox, "photo.jpg")); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("pushed file differs")
	}
	if len(offered) != 1 || offered[0] != "mom" {
		t.Errorf("offered hook saw %v", offered)
	}
	// A friend without files is refused before anything is written.
	c2, err := e.dial(stranger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Push(e.ctx, plan, nil); !errors.Is(err, ErrFilesNotAllowed) {
		t.Fatalf("push without files permission: %v", err)
	}
	// A ticket holder pulls what is offered.
	c3, err := e.dial(ident(t), secret)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	res, err := c3.Pull(e.ctx, &files.Inbox{Dir: dst}, nil, nil)
	if err != nil || len(res) != 1 {
		t.Fatalf("pull: %v %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "photo.jpg")); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("pulled file differs")
	}
}

func TestShellOnlyWithPermission(t *testing.T) {
	kid, other := ident(t), ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t,
			keys.Friend{Name: "kid", Key: kid.Public(), Perms: keys.Permissions{Shell: true}},
			keys.Friend{Name: "other", Key: other.Public(), Perms: keys.Permissions{Files: true}}),
		Shell: &shell.Config{Shell: "/bin/sh"},
	})
	c, err := e.dial(kid, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo hi; exit 0")
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("%q %v", out, err)
	}
	c2, err := e.dial(other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.NewSession(); !errors.Is(err, ErrShellNotAllowed) {
		t.Fatalf("shell without permission: %v", err)
	}
}

func sshMarshalDirect(host string, port int) []byte {
	return ssh.Marshal(directTCPIP{Host: host, Port: uint32(port), OriginHost: "127.0.0.1"})
}

func BenchmarkForward(b *testing.B) {
	bob := ident(b)
	sink, _ := net.Listen("tcp", "127.0.0.1:0")
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	port := sink.Addr().(*net.TCPAddr).Port
	e := newEnv(b, ServerConfig{
		Friends: friends(b, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{AllPorts: true}}),
		Ports:   map[int]string{port: sink.Addr().String()},
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	const total = 256 << 20
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		conn, err := c.DialPort(e.ctx, port)
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < total; n += len(buf) {
			if _, err := conn.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		conn.Close()
	}
}

func TestFriendWithTicketGetsTheTicketsPort(t *testing.T) {
	port, addr := webServer(t, []byte("shared"))
	bob := ident(t)
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Files: true}}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{port}}, keys.SecretEqual(s, secret)
		},
		Ports: map[int]string{port: addr},
	})
	c, err := e.dial(bob, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got := forwardGet(t, c, port); string(got) != "shared" {
		t.Fatalf("got %q", got)
	}
}

// unprovenSigner offers pub without holding its private key: the server
// hears the offer (its PublicKeyCallback runs for pub), then signing
// fails and the client goes on with its next auth method.
type unprovenSigner struct {
	ssh.AlgorithmSigner // some other key, for its algorithms
	pub                 ssh.PublicKey
}

func (u unprovenSigner) PublicKey() ssh.PublicKey { return u.pub }

func (u unprovenSigner) SignWithAlgorithm(io.Reader, []byte, string) (*ssh.Signature, error) {
	return nil, errors.New("no private key for this one")
}

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The grant is the one of the method and key that authenticated, never
// of a key that was only offered (CVE-2024-45337).
func TestGrantIsOfTheKeyThatAuthenticated(t *testing.T) {
	ticketPort, ticketAddr := webServer(t, []byte("ticket"))
	bobPort, bobAddr := webServer(t, []byte("bob"))
	alice, bob, mallory := ident(t), ident(t), ident(t)
	secret := keys.NewSecret()
	logs := &syncBuffer{}
	e := newEnv(t, ServerConfig{
		Friends: friends(t,
			keys.Friend{Name: "alice", Key: alice.Public(), Perms: keys.Permissions{Shell: true, Files: true, AllPorts: true}},
			keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{bobPort}}}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{ticketPort}}, keys.SecretEqual(s, secret)
		},
		Ports:  map[int]string{ticketPort: ticketAddr, bobPort: bobAddr},
		Inbox:  &files.Inbox{Dir: t.TempDir()},
		Shell:  &shell.Config{},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	srv, err := NewServer(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	malloryAS := mallory.Signer.(ssh.AlgorithmSigner)
	offerAlice := unprovenSigner{AlgorithmSigner: malloryAS, pub: alice.Public()}
	// connect tries auth in order, then the methods in then (even
	// publickey again, with other keys).
	connect := func(auth []ssh.AuthMethod, then ...ssh.AuthMethod) *ssh.Client {
		t.Helper()
		a, b := testconn.TCPPair(t)
		e.wg.Add(1)
		go func() { defer e.wg.Done(); srv.ServeConn(e.ctx, b, "test") }()
		c, chans, reqs, err := ssh.NewClientConn(a, "kin", &ssh.ClientConfig{
			User: "kin", Auth: auth, HostKeyCallback: ssh.FixedHostKey(e.host.Public()),
			AuthCallback: func(*ssh.ClientAuthContext) (ssh.AuthMethod, error) {
				if len(then) == 0 {
					return nil, nil
				}
				next := then[0]
				then = then[1:]
				return next, nil
			},
		})
		if err != nil {
			a.Close()
			t.Fatalf("handshake: %v\n%s", err, logs)
		}
		cl := ssh.NewClient(c, chans, reqs)
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	allowed := func(cl *ssh.Client, port int) bool {
		ok, _, err := cl.SendRequest(checkPortRequest, true, ssh.Marshal(portMsg{uint32(port)}))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	aliceFP := ssh.FingerprintSHA256(alice.Public())

	// Offers alice's key, cannot prove it, then shows the ticket.
	cl := connect([]ssh.AuthMethod{ssh.PublicKeys(offerAlice), ssh.Password(string(secret))})
	if !allowed(cl, ticketPort) || allowed(cl, bobPort) {
		t.Fatal("the ticket holder does not have exactly the ticket's port")
	}
	if _, _, err := cl.OpenChannel("session", nil); err == nil {
		t.Fatal("the ticket holder got alice's shell")
	}
	if _, _, err := cl.OpenChannel(pushChannel, nil); err == nil {
		t.Fatal("the ticket holder got alice's files")
	}
	cl.Close()

	// Offers bob's key and alice's, proves neither, then proves bob's.
	offerBob := unprovenSigner{AlgorithmSigner: malloryAS, pub: bob.Public()}
	cl = connect(nil, ssh.PublicKeys(offerBob), ssh.PublicKeys(offerAlice), ssh.PublicKeys(bob.Signer))
	if !allowed(cl, bobPort) || allowed(cl, ticketPort) {
		t.Fatal("bob does not have exactly bob's port")
	}
	if _, _, err := cl.OpenChannel("session", nil); err == nil {
		t.Fatal("bob got alice's shell")
	}
	cl.Close()

	// Alice herself, to show the checks above can tell.
	cl = connect([]ssh.AuthMethod{ssh.PublicKeys(alice.Signer)})
	if !allowed(cl, bobPort) {
		t.Fatal("alice lacks port=*")
	}
	ch, reqs, err := cl.OpenChannel(pushChannel, nil)
	if err != nil {
		t.Fatalf("alice's files: %v", err)
	}
	go ssh.DiscardRequests(reqs)
	ch.Close()
	cl.Close()

	e.cancel()
	e.wg.Wait()
	out := logs.String()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, aliceFP) && !strings.Contains(line, "who=\"alice") {
			t.Errorf("a connection alice did not make is logged under her key:\n%s", line)
		}
	}
	if !strings.Contains(out, `who=ticket`) || !strings.Contains(out, `who="bob (`) {
		t.Errorf("logs lack the ticket or bob:\n%s", out)
	}
}

// kin pipe: a whole SSH connection inside a friend's connection, which
// authenticates on its own; tickets do not carry one.
func TestPipeCarriesAnSSHConnection(t *testing.T) {
	port, addr := webServer(t, []byte("inner"))
	bob, eve := ident(t), ident(t)
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{port}}, keys.SecretEqual(s, secret)
		},
		Ports: map[int]string{port: addr},
	})
	outer, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner := func(id *keys.Identity) (*Client, error) {
		conn, err := outer.Pipe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(e.ctx, conn, ClientConfig{Identity: id, HostKey: e.host.Public()})
		if err != nil {
			conn.Close()
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return c, nil
	}
	c, err := inner(bob)
	if err != nil {
		t.Fatal(err)
	}
	if got := forwardGet(t, c, port); string(got) != "inner" {
		t.Fatalf("through the pipe: %q", got)
	}
	// The inner connection checks its key itself: a stranger's is refused.
	if _, err := inner(eve); !errors.Is(err, ErrAuthRefused) {
		t.Fatalf("stranger inside bob's pipe: %v", err)
	}
	tc, err := e.dial(eve, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Pipe(context.Background()); !errors.Is(err, ErrPipeNotAllowed) {
		t.Fatalf("pipe with a ticket: %v", err)
	}
	// The same on a connection that has streams beside SSH.
	ts, conn := e.dialLanesBound(eve, secret, true)
	if _, err := ts.Pipe(context.Background()); !errors.Is(err, ErrPipeNotAllowed) {
		t.Fatalf("pipe on a stream with a ticket: %v", err)
	}
	if n := conn.streamsOpened(); n != 0 {
		t.Errorf("%d streams opened for a refused pipe", n)
	}
}

// Everything a friend does is in the server's log at info: each forwarded
// connection opens and closes with a line naming the friend and the port.
// ForwardConn carries one local connection.
func TestPortForwardsAreLoggedAtInfo(t *testing.T) {
	port, addr := webServer(t, []byte("logged"))
	bob := ident(t)
	var logs lockedBuffer
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: addr},
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := testconn.TCPPair(t)
	done := make(chan error, 1)
	go func() { done <- c.ForwardConn(e.ctx, theirs, port) }()
	io.WriteString(mine, "GET / HTTP/1.0\r\n\r\n")
	body, _ := io.ReadAll(mine)
	mine.Close()
	if err := <-done; err != nil || !strings.HasSuffix(string(body), "logged") {
		t.Fatalf("ForwardConn: %v, got %q", err, body)
	}
	c.Close()
	e.cancel()
	e.wg.Wait() // the server has logged all it will
	who := `who="bob (` + ssh.FingerprintSHA256(bob.Public()) + `)"`
	for _, want := range []string{
		fmt.Sprintf(`level=INFO msg="port forward opened" peer=test %s port=%d`, who, port),
		fmt.Sprintf(`level=INFO msg="port forward closed" peer=test %s port=%d after=`, who, port),
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A push whose connection breaks says the connection was lost, and why,
// not only that the channel ended.
func TestPushOnALostConnectionSaysSo(t *testing.T) {
	mom := ident(t)
	host := ident(t)
	srv, err := NewServer(ServerConfig{
		Identity: host,
		Friends:  friends(t, keys.Friend{Name: "mom", Key: mom.Public(), Perms: keys.Permissions{Files: true}}),
		Inbox:    &files.Inbox{Dir: t.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := testconn.TCPPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(ctx, b, "test") }()
	c, err := NewClient(ctx, a, ClientConfig{Identity: mom, HostKey: host.Public()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	plan, err := files.StreamPlan("endless", zeros{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	_, err = c.Push(ctx, plan, func(p files.Progress) {
		if p.Done > 1<<20 {
			once.Do(func() { b.Close() }) // the receiver's end breaks mid-send
		}
	})
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("push over a broken connection: %v, want ErrConnectionLost", err)
	}
	cancel()
	<-served
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
