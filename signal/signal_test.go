package signal

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/stun"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"kin/keys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testEnv struct {
	t   *testing.T
	srv *Server
	hs  *httptest.Server
	url string
	ctx context.Context
	wg  sync.WaitGroup
}

func newEnv(t *testing.T, cfg ServerConfig) *testEnv {
	e := &testEnv{t: t, srv: NewServer(cfg)}
	e.hs = httptest.NewServer(e.srv)
	e.url = "ws" + strings.TrimPrefix(e.hs.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.ctx = ctx
	t.Cleanup(func() {
		cancel()
		e.wg.Wait()
		e.srv.Close()
		e.hs.Close()
	})
	return e
}

func (e *testEnv) client(id *keys.Identity) *Client {
	c := NewClient(ClientConfig{URL: e.url, Signer: id.Signer})
	e.wg.Add(1)
	go func() { defer e.wg.Done(); c.Run(e.ctx) }()
	rctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	reg, err := c.Ready(rctx)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	if reg.ID != id.ID() {
		e.t.Fatalf("registered as %s, want %s", reg.ID, id.ID())
	}
	return c
}

func ident(t *testing.T) *keys.Identity {
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func recv(t *testing.T, c *Client) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return m
}

func TestRouteOfferAnswerCandidate(t *testing.T) {
	ice := []ICEServer{{URLs: []string{"stun:203.0.113.1:3478"}}}
	e := newEnv(t, ServerConfig{ICEServers: func(keys.PeerID) []ICEServer { return ice }})
	a, b := ident(t), ident(t)
	ca, cb := e.client(a), e.client(b)
	if reg, _ := ca.Ready(e.ctx); len(reg.ICEServers) != 1 {
		t.Errorf("ICE servers %v", reg.ICEServers)
	}
	for _, typ := range []string{TypeOffer, TypeCandidate} {
		// "from" is the server's to set: a lie is overwritten.
		if err := ca.Send(e.ctx, Message{Type: typ, To: b.ID(), From: "aaaaaaaaaaaaaaaa", Session: "s1", SDP: "v=0", Candidate: "{}"}); err != nil {
			t.Fatal(err)
		}
		m := recv(t, cb)
		if m.Type != typ || m.From != a.ID() || m.Session != "s1" {
			t.Fatalf("b got %+v", m)
		}
	}
	cb.Send(e.ctx, Message{Type: TypeAnswer, To: a.ID(), Session: "s1", SDP: "v=0"})
	if m := recv(t, ca); m.Type != TypeAnswer || m.From != b.ID() {
		t.Fatalf("a got %+v", m)
	}
	if !e.srv.Online(a.ID()) || e.srv.Online(ident(t).ID()) {
		t.Error("Online is wrong")
	}
}

func TestOfflinePeerIsAnsweredAtOnce(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	ca := e.client(ident(t))
	nobody := ident(t).ID()
	start := time.Now()
	ca.Send(e.ctx, Message{Type: TypeOffer, To: nobody, Session: "s9", SDP: "v=0"})
	m := recv(t, ca)
	if m.Type != TypeError || m.Code != CodeOffline || m.Session != "s9" || m.To != nobody {
		t.Fatalf("got %+v", m)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("offline answer was slow")
	}
}

// rawConn speaks the protocol by hand, as an attacker would.
func rawConn(t *testing.T, e *testEnv) (*websocket.Conn, Message) {
	ws, _, err := websocket.Dial(e.ctx, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	m, err := readMessage(e.ctx, ws)
	if err != nil || m.Type != TypeChallenge {
		t.Fatalf("challenge: %+v %v", m, err)
	}
	return ws, m
}

func TestNobodyRegistersAKeyTheyDoNotHold(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	victim, mallory := ident(t), ident(t)

	// A signature by mallory's key presented with the victim's key.
	ws, ch := rawConn(t, e)
	reg, _ := signRegistration(mallory.Signer, ch.Nonce)
	reg.Key = victim.AuthorizedKey()
	writeMessage(e.ctx, ws, reg)
	if m, _ := readMessage(e.ctx, ws); m.Type != TypeError || m.Code != CodeAuth {
		t.Fatalf("forged registration: %+v", m)
	}

	// A replayed signature over an earlier nonce.
	ws1, ch1 := rawConn(t, e)
	old, _ := signRegistration(victim.Signer, ch1.Nonce)
	ws1.CloseNow()
	ws2, _ := rawConn(t, e)
	writeMessage(e.ctx, ws2, old)
	if m, _ := readMessage(e.ctx, ws2); m.Type != TypeError || m.Code != CodeAuth {
		t.Fatalf("replayed registration: %+v", m)
	}
	if e.srv.Online(victim.ID()) {
		t.Fatal("victim is registered")
	}

	// The client's Ready reports the refusal.
	c := NewClient(ClientConfig{URL: e.url, Signer: forgingSigner{Signer: mallory.Signer, pub: victim.Public()}})
	e.wg.Add(1)
	go func() { defer e.wg.Done(); c.Run(e.ctx) }()
	if _, err := c.Ready(e.ctx); !errors.Is(err, ErrRefused) {
		t.Fatalf("Ready: %v", err)
	}
}

// forgingSigner claims one key and signs with another.
type forgingSigner struct {
	ssh.Signer
	pub ssh.PublicKey
}

func (f forgingSigner) PublicKey() ssh.PublicKey { return f.pub }

func TestLimits(t *testing.T) {
	e := newEnv(t, ServerConfig{MaxMessageBytes: 1024, Rate: 5, Burst: 5, MaxConns: 3})
	a := e.client(ident(t))
	b := ident(t)
	e.client(b)
	// Rate: a burst beyond 5 gets rate-limit errors.
	for i := 0; i < 10; i++ {
		a.Send(e.ctx, Message{Type: TypeCandidate, To: b.ID(), Session: "s"})
	}
	limited := false
	for i := 0; i < 10 && !limited; i++ {
		ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		m, err := a.Recv(ctx)
		cancel()
		if err != nil {
			break
		}
		limited = m.Code == CodeRateLimit
	}
	if !limited {
		t.Error("no rate-limit error")
	}
	// Size: a frame over 1 KiB closes the connection with too-big.
	ws, ch := rawConn(t, e)
	id := ident(t)
	reg, _ := signRegistration(id.Signer, ch.Nonce)
	writeMessage(e.ctx, ws, reg)
	readMessage(e.ctx, ws) // registered
	big, _ := json.Marshal(Message{V: Version, Type: TypeOffer, To: b.ID(), Session: "s", SDP: strings.Repeat("x", 4096)})
	ws.Write(e.ctx, websocket.MessageText, big)
	if _, err := readMessage(e.ctx, ws); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("too big: %v", err)
	}
	// Each refusal is counted.
	deadline := time.Now().Add(5 * time.Second)
	for refused(t, e.srv, RefusedTooBig) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if refused(t, e.srv, RefusedRateLimit) == 0 || refused(t, e.srv, RefusedTooBig) != 1 {
		t.Errorf("rate-limit counted %v, too-big %v", refused(t, e.srv, RefusedRateLimit), refused(t, e.srv, RefusedTooBig))
	}
}

func TestClientReregistersAfterDisconnect(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	id := ident(t)
	c := e.client(id)
	first := c.connected()
	e.srv.current(id.ID()).cancel() // the server drops it, as on a network change
	deadline := time.Now().Add(10 * time.Second)
	for ws := c.connected(); ws == nil || ws == first || !e.srv.Online(id.ID()); ws = c.connected() {
		if time.Now().After(deadline) {
			t.Fatal("client did not re-register")
		}
		time.Sleep(50 * time.Millisecond)
	}
	other := e.client(ident(t))
	other.Send(e.ctx, Message{Type: TypeOffer, To: id.ID(), Session: "x", SDP: "v=0"})
	if m := recv(t, c); m.Type != TypeOffer {
		t.Fatalf("after re-registering: %+v", m)
	}
}

func TestTwoRegistrationsOfOneKeyDoNotFight(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	id := ident(t)
	agent := e.client(id)
	share := e.client(id) // e.g. kin share while kin up runs
	other := e.client(ident(t))
	other.Send(e.ctx, Message{Type: TypeOffer, To: id.ID(), Session: "1", SDP: "v=0"})
	if m := recv(t, share); m.Session != "1" {
		t.Fatalf("newest registration got %+v", m)
	}
	// The older one was not kicked out: when the newer leaves, it is current again.
	e.srv.current(id.ID()).cancel()
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.current(id.ID()) == nil || agent.connected() == nil {
		if time.Now().After(deadline) {
			t.Fatal("agent lost its registration")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the dropped one may come back; either gets it
	other.Send(e.ctx, Message{Type: TypeOffer, To: id.ID(), Session: "2", SDP: "v=0"})
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	select {
	case <-waitRecv(ctx, agent):
	case <-waitRecv(ctx, share):
	case <-ctx.Done():
		t.Fatal("nobody got the offer")
	}
}

func waitRecv(ctx context.Context, c *Client) <-chan Message {
	ch := make(chan Message, 1)
	go func() {
		if m, err := c.Recv(ctx); err == nil {
			ch <- m
		}
	}()
	return ch
}

func (c *Client) connected() *websocket.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws
}

func TestCloseSaysGoingAway(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	ws, ch := rawConn(t, e)
	id := ident(t)
	reg, _ := signRegistration(id.Signer, ch.Nonce)
	writeMessage(e.ctx, ws, reg)
	readMessage(e.ctx, ws)
	go e.srv.Close()
	m, err := readMessage(e.ctx, ws)
	if err != nil || m.Code != CodeGoingAway {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestSTUNBinding(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSTUN(ctx, pc, nil) }()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(req.Raw)
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil {
		t.Fatal(err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	if xor.String() != c.LocalAddr().String() {
		t.Fatalf("STUN says %s, we are %s", xor, c.LocalAddr())
	}
}

func FuzzSTUNReply(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	from := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 4242}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, _, err := STUNReply(b, from)
		if err != nil {
			return
		}
		var m stun.Message
		if err := stun.Decode(resp, &m); err != nil {
			t.Fatalf("answered with a broken message: %v", err)
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(&m); err != nil || xor.String() != from.String() {
			t.Fatalf("mapped address %v %v", xor, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"offer","to":"aaaaaaaaaaaaaaaa","session":"s","sdp":"v=0"}`))
	f.Add([]byte(`{"v":1,"type":"register","key":"ssh-ed25519 AAAA","sig":"AAAA"}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		switch m.Type {
		case TypeOffer, TypeAnswer, TypeCandidate, TypeBye:
			if !m.To.Valid() || m.Session == "" {
				t.Fatalf("accepted unroutable %+v", m)
			}
		case TypeRegister:
		default:
			t.Fatalf("accepted type %q", m.Type)
		}
	})
}

func TestPresence(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	a, b := ident(t), ident(t)
	ca := e.client(a)
	e.client(b)
	nobody := ident(t).ID()
	got, err := ca.Online(e.ctx, b.ID(), nobody)
	if err != nil || !got[b.ID()] || got[nobody] {
		t.Fatalf("%v %v", got, err)
	}
}

func TestSTUNChangePortAnswersFromTheOtherPort(t *testing.T) {
	a, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSTUN(ctx, a, b) }()
	defer func() { cancel(); <-done }()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	req.Add(stun.AttrChangeRequest, []byte{0, 0, 0, ChangePort})
	req.Encode()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.WriteTo(req.Raw, a.LocalAddr())
	buf := make([]byte, 1500)
	_, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if from.String() != b.LocalAddr().String() {
		t.Fatalf("answer came from %s, want the other port %s", from, b.LocalAddr())
	}
}
