package cmd

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"kin/agent"
	"kin/internal/memsignal"
	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport"
)

func TestLyingSignalingServerGetsRefusedHostKey(t *testing.T) {
	alice, _ := keys.NewIdentity()
	mallory, _ := keys.NewIdentity()
	bob, _ := keys.NewIdentity()
	r := memsignal.New()
	r.Impersonate(alice.ID(), mallory.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	cfg := transport.Config{Interfaces: []string{"lo"}}
	mNode := transport.NewNode(r.Endpoint(mallory.ID()), cfg)
	bNode := transport.NewNode(r.Endpoint(bob.ID()), cfg)
	for _, n := range []*transport.Node{mNode, bNode} {
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}
	// Mallory answers with her own SSH server, pretending to be alice.
	srv, err := session.NewServer(session.ServerConfig{
		Identity: mallory,
		Tickets:  func([]byte) (keys.Permissions, bool) { return keys.Permissions{AllPorts: true}, true },
		Ports:    map[int]string{80: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := mNode.Accept(ctx)
		if err != nil {
			return
		}
		srv.ServeConn(ctx, conn, "bob")
	}()

	p := &agent.Peer{Identity: bob, URL: "ws://evil", Node: bNode}
	client, _, err := dial(ctx, p.Link(), alice.Public(), keys.NewSecret(), "", "alice")
	if err == nil {
		client.Close()
		t.Fatal("bob connected to mallory believing she is alice")
	}
	if !errors.Is(err, session.ErrHostKeyMismatch) {
		t.Fatalf("want host key mismatch, got %v", err)
	}
	var h *hinted
	if !errors.As(err, &h) || !strings.Contains(h.hint, "do not trust") {
		t.Errorf("error lacks the hint: %v", err)
	}
}

// evilSignal is a malicious signaling server in front of the real one, as
// a compromised operator would run it: every client's WebSocket is relayed
// to the real server (so each registers as itself), and messages meant for
// victim go to impostor, whose replies come back claiming to be victim.
// impostor's own messages pass untouched, so she can also dial victim and
// sit in the middle.
type evilSignal struct {
	upstream         string
	victim, impostor keys.PeerID
	ctx              context.Context
	wg               sync.WaitGroup
}

func (s *evilSignal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	down, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer down.CloseNow()
	up, _, err := websocket.Dial(s.ctx, s.upstream, nil)
	if err != nil {
		return
	}
	defer up.CloseNow()
	down.SetReadLimit(1 << 20)
	up.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var mu sync.Mutex
	var self keys.PeerID // the client's ID, once the real server confirmed it
	relay := func(from, to *websocket.Conn, rewrite func(*signal.Message)) {
		defer cancel()
		for {
			typ, b, err := from.Read(ctx)
			if err != nil {
				return
			}
			var m signal.Message
			if json.Unmarshal(b, &m) == nil {
				rewrite(&m)
				b, _ = json.Marshal(m)
			}
			if to.Write(ctx, typ, b) != nil {
				return
			}
		}
	}
	go relay(down, up, func(m *signal.Message) { // client -> server
		mu.Lock()
		defer mu.Unlock()
		if self != s.impostor && m.To == s.victim {
			m.To = s.impostor
		}
	})
	relay(up, down, func(m *signal.Message) { // server -> client
		mu.Lock()
		defer mu.Unlock()
		if m.Type == signal.TypeRegistered {
			self = m.From
		}
		if self != s.impostor && self != s.victim && m.Type != signal.TypeRegistered {
			if m.From == s.impostor {
				m.From = s.victim
			}
			if m.To == s.impostor {
				m.To = s.victim
			}
		}
	})
}

// recorder keeps every byte and every secret mallory sees.
type recorder struct {
	mu      sync.Mutex
	bytes   []byte
	secrets [][]byte
	conns   int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes = append(r.bytes, p...)
	return len(p), nil
}

func (r *recorder) secret(s []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = append(r.secrets, bytes.Clone(s))
}

func (r *recorder) saw(x []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if bytes.Contains(r.bytes, x) {
		return true
	}
	for _, s := range r.secrets {
		if bytes.Contains(s, x) {
			return true
		}
	}
	return false
}

// tapConn records what mallory reads from a connection.
type tapConn struct {
	net.Conn
	rec *recorder
}

func (c tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.Write(p[:n])
	return n, err
}

// evilLab is alice (the peer meant), mallory (the impostor) and bob's
// side, all registered over real WebSockets with a lying signaling server.
type evilLab struct {
	t                      *testing.T
	ctx                    context.Context
	e                      *env
	wg                     sync.WaitGroup
	url                    string // the lying server
	alice, mallory, bob    *keys.Identity
	alicePeer, malloryPeer *agent.Peer
	bobHome                string // bob's KIN_HOME, alice in his friends
	alicePort              int    // serves page to bob and to ticket holders
	page                   []byte
	ticket                 []byte
	mallorySees            *recorder
}

func newEvilLab(t *testing.T, mitm bool) *evilLab {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	l := &evilLab{t: t, ctx: ctx, mallorySees: &recorder{}, ticket: keys.NewSecret()}
	l.alice, _ = keys.NewIdentity()
	l.mallory, _ = keys.NewIdentity()
	l.e = &env{log: newLogger(io.Discard, false), stdout: io.Discard, stderr: io.Discard, interfaces: []string{"lo"}}

	// The real signaling server, and the lying one in front of it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.wg.Add(1)
	go func() { defer l.wg.Done(); signal.NewServer(signal.ServerConfig{Logger: l.e.log}).Serve(ctx, ln) }()
	evil := &evilSignal{upstream: "ws://" + ln.Addr().String(), victim: l.alice.ID(), impostor: l.mallory.ID(), ctx: ctx}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: evil}
	go hs.Serve(eln)
	l.url = "ws://" + eln.Addr().String()
	t.Cleanup(func() {
		cancel()
		hs.Close()
		evil.wg.Wait()
		l.wg.Wait()
	})

	// bob knows alice as a friend, with her real key.
	l.bobHome = t.TempDir()
	l.kin(nil, nil, "id")
	l.bob, err = keys.LoadIdentity(filepath.Join(l.bobHome, "identity"))
	if err != nil {
		t.Fatal(err)
	}
	l.kin(nil, nil, "friends", "add", "alice", l.alice.AuthorizedKey())

	// alice: a web page for bob (friend) and for a ticket.
	l.page = []byte("alice's page, for bob's eyes only: " + hex.EncodeToString(keys.NewSecret()))
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(l.page) }))
	t.Cleanup(web.Close)
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(web.URL, "http://"))
	l.alicePort, _ = strconv.Atoi(p)
	fr, _ := keys.ParseFriends(nil)
	fr.Add(keys.Friend{Name: "bob", Key: l.bob.Public(), Perms: keys.Permissions{Ports: []int{l.alicePort}}})
	aliceSrv, err := session.NewServer(session.ServerConfig{
		Identity: l.alice,
		Friends:  func() *keys.Friends { return fr },
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{Ports: []int{l.alicePort}}, keys.SecretEqual(s, l.ticket)
		},
		Ports: map[int]string{l.alicePort: strings.TrimPrefix(web.URL, "http://")},
	})
	if err != nil {
		t.Fatal(err)
	}
	l.alicePeer = l.startPeer(l.alice)
	l.malloryPeer = l.startPeer(l.mallory)
	l.serve(l.alicePeer, func(conn net.Conn) { aliceSrv.ServeConn(ctx, conn, "bob?") })

	// mallory: her own kin SSH server that takes every secret and key,
	// or a relay to the real alice; either way she records all she sees.
	fake, _ := keys.ParseFriends(nil)
	fake.Add(keys.Friend{Name: "bob", Key: l.bob.Public(), Perms: keys.Permissions{Shell: true, Files: true, AllPorts: true}})
	msrv, err := session.NewServer(session.ServerConfig{
		Identity: l.mallory,
		Friends:  func() *keys.Friends { return fake },
		Tickets: func(s []byte) (keys.Permissions, bool) {
			l.mallorySees.secret(s)
			return keys.Permissions{AllPorts: true}, true
		},
		Ports: map[int]string{l.alicePort: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	l.serve(l.malloryPeer, func(conn net.Conn) {
		l.mallorySees.mu.Lock()
		l.mallorySees.conns++
		l.mallorySees.mu.Unlock()
		if !mitm {
			msrv.ServeConn(ctx, tapConn{conn, l.mallorySees}, "bob")
			return
		}
		defer conn.Close()
		real, err := l.malloryPeer.Node.Dial(ctx, l.alice.ID())
		if err != nil {
			t.Errorf("mallory could not reach alice: %v", err)
			return
		}
		defer real.Close()
		done := make(chan struct{}, 2)
		go func() { io.Copy(real, io.TeeReader(conn, l.mallorySees)); done <- struct{}{} }()
		go func() { io.Copy(conn, io.TeeReader(real, l.mallorySees)); done <- struct{}{} }()
		<-done
		conn.Close()
		real.Close()
		<-done
	})
	return l
}

func (l *evilLab) startPeer(id *keys.Identity) *agent.Peer {
	p, err := startPeer(l.ctx, l.e, id, l.url, signal.ModeListen)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(p.Close)
	return p
}

// serve runs handle on every connection p accepts, until the test ends.
func (l *evilLab) serve(p *agent.Peer, handle func(net.Conn)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			conn, err := p.Node.Accept(l.ctx)
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() { defer l.wg.Done(); handle(conn) }()
		}
	}()
}

// kin runs a kin command as bob, in this process; it returns the exit
// code and stderr.
func (l *evilLab) kin(stdin io.Reader, stdout io.Writer, args ...string) (int, string) {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	if stdout == nil {
		stdout = io.Discard
	}
	var stderr strings.Builder
	code := run(l.ctx, append([]string{"kin", "--home", l.bobHome, "--signal", l.url, "--ice-interfaces", "lo"}, args...), stdin, stdout, &stderr)
	return code, stderr.String()
}

// mallorySawSSH reports whether any connection reached mallory (so the
// test proves the lie was told and acted on).
func (l *evilLab) mallorySawSSH() bool {
	l.mallorySees.mu.Lock()
	defer l.mallorySees.mu.Unlock()
	return l.mallorySees.conns > 0 && bytes.Contains(l.mallorySees.bytes, []byte("SSH-2.0-kin"))
}

// The lying server swaps alice's answer for mallory's (her key, her DTLS
// fingerprint): bob's ticket secret never reaches mallory.
func TestLyingSignalingSwapGetsNoTicketSecret(t *testing.T) {
	l := newEvilLab(t, false)
	bp := l.startPeer(l.bob)
	client, _, err := dial(l.ctx, bp.Link(), l.alice.Public(), l.ticket, "", "alice")
	if err == nil {
		client.Close()
		t.Fatal("bob connected to mallory believing she is alice")
	}
	if !errors.Is(err, session.ErrHostKeyMismatch) {
		t.Fatalf("want host key mismatch, got %v", err)
	}
	if !l.mallorySawSSH() {
		t.Fatal("the lie did not route bob to mallory")
	}
	if l.mallorySees.saw(l.ticket) || len(l.mallorySees.secrets) != 0 {
		t.Fatal("mallory got a ticket secret")
	}
}

// The lying server puts mallory in the middle, relaying both ways: the
// connection works, and mallory sees neither the secret nor the content.
func TestLyingSignalingMITMGetsNoTicketSecret(t *testing.T) {
	l := newEvilLab(t, true)
	bp := l.startPeer(l.bob)
	client, _, err := dial(l.ctx, bp.Link(), l.alice.Public(), l.ticket, "", "alice")
	if err != nil {
		t.Fatalf("through mallory's relay: %v", err)
	}
	defer client.Close()
	conn, err := client.DialPort(l.ctx, l.alicePort)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	got, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.Contains(got, l.page) {
		t.Fatalf("bob got %q", got)
	}
	client.Close()
	if !l.mallorySawSSH() {
		t.Fatal("the lie did not route bob through mallory")
	}
	if l.mallorySees.saw(l.ticket) || l.mallorySees.saw(l.page[:20]) {
		t.Fatal("mallory read the ticket secret or the page")
	}
}

// kin pipe through the lying server: it refuses mallory before any byte
// of the user's SSH session (here a recognisable OpenSSH banner) is sent.
func TestLyingSignalingPipeRefusesImpostor(t *testing.T) {
	l := newEvilLab(t, false)
	marker := "SSH-2.0-OpenSSH_9.9 users-session-" + hex.EncodeToString(keys.NewSecret()[:8])
	stdin := strings.NewReader(marker + "\r\n" + strings.Repeat("x", 4096))
	var out bytes.Buffer
	code, stderr := l.kin(stdin, &out, "pipe", "alice")
	if code == 0 || !strings.Contains(stderr, "host key mismatch") || !strings.Contains(stderr, "do not trust") {
		t.Fatalf("pipe to mallory: exit %d, stderr %q", code, stderr)
	}
	if !l.mallorySawSSH() {
		t.Fatal("the lie did not route bob to mallory")
	}
	if l.mallorySees.saw([]byte(marker)) {
		t.Fatal("the user's SSH session reached mallory")
	}
	if out.Len() != 0 {
		t.Fatalf("mallory's bytes reached the user's ssh: %q", out.Bytes())
	}
}

// kin pipe with mallory in the middle: the SSH session inside works, and
// mallory reads none of it.
func TestLyingSignalingPipeMITMReadsNothing(t *testing.T) {
	l := newEvilLab(t, true)
	inner, outer := net.Pipe()
	done := make(chan int, 1)
	go func() {
		code, stderr := l.kin(outer, outer, "pipe", "alice")
		if code != 0 {
			t.Errorf("pipe: exit %d: %s", code, stderr)
		}
		outer.Close()
		done <- code
	}()
	c, err := session.NewClient(l.ctx, inner, session.ClientConfig{Identity: l.bob, HostKey: l.alice.Public()})
	if err != nil {
		t.Fatalf("ssh inside kin pipe: %v", err)
	}
	conn, err := c.DialPort(l.ctx, l.alicePort)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	got, _ := io.ReadAll(conn)
	conn.Close()
	c.Close()
	inner.Close()
	<-done
	if !bytes.Contains(got, l.page) {
		t.Fatalf("bob got %q", got)
	}
	if !l.mallorySawSSH() {
		t.Fatal("the lie did not route bob through mallory")
	}
	if l.mallorySees.saw(l.page[:20]) {
		t.Fatal("mallory read the session inside the pipe")
	}
}
