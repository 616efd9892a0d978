package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kin/internal/memsignal"
	"kin/keys"
	"kin/signal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pion closes these asynchronously shortly after PeerConnection.Close.
		goleak.IgnoreTopFunction("github.com/pion/transport/v2/deadline.(*Deadline).timer"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).startOnConnectionStateChangeRoutine.func2"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).startOnConnectionStateChangeRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/pion/sctp.(*Association).readLoop"),
		goleak.IgnoreAnyFunction("github.com/pion/sctp.(*Association).writeLoop"),
		goleak.IgnoreAnyFunction("github.com/pion/dtls/v2.(*Conn).readAndBuffer"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).taskLoop"),
		goleak.IgnoreAnyFunction("github.com/pion/webrtc/v3.(*operations).start"),
		goleak.IgnoreAnyFunction("github.com/pion/srtp/v2.(*session).start.func1"),
		goleak.IgnoreAnyFunction("github.com/pion/interceptor/pkg/report.(*ReceiverInterceptor).loop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
}

type pairEnv struct {
	a, b   *Node
	bID    keys.PeerID
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPair(t testing.TB) *pairEnv {
	cfg := Config{Interfaces: []string{"lo"}}
	return newPairWith(t, cfg, cfg)
}

// newPairWith makes two nodes on loopback: a (the dialer) with cfgA, b
// with cfgB.
func newPairWith(t testing.TB, cfgA, cfgB Config) *pairEnv {
	r := memsignal.New()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	p := &pairEnv{ctx: ctx, cancel: cancel, bID: "bbbbbbbbbbbbbbbb"}
	p.a = NewNode(r.Endpoint("aaaaaaaaaaaaaaaa"), cfgA)
	p.b = NewNode(r.Endpoint(p.bID), cfgB)
	for _, n := range []*Node{p.a, p.b} {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); n.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); p.wg.Wait() })
	return p
}

// connect dials a -> b and returns both ends.
func (p *pairEnv) connect(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	type res struct {
		c   *Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := p.b.Accept(p.ctx)
		acc <- res{c, err}
	}()
	d, err := p.a.Dial(p.ctx, p.bID)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	return d, r.c
}

func TestBytesBothWays(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	info := d.Info()
	if info.Path != "direct (loopback)" || info.Timings.Connected == 0 || info.Timings.ICE == 0 {
		t.Errorf("info %+v", info)
	}
	if !strings.Contains(info.Local, "127.0.0.1") {
		t.Errorf("not on loopback: %s", info.Local)
	}
	transfer(t, d, a, 16<<20)
}

func TestStreamSemanticsAndDeadline(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	d.Write([]byte("hello world"))
	var got []byte
	buf := make([]byte, 3)
	for len(got) < 11 {
		n, err := a.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hello world" {
		t.Fatalf("got %q", got)
	}
	a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := a.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	d.Write([]byte("x"))
	if n, err := a.Read(buf); err != nil || n != 1 {
		t.Fatalf("read after clearing deadline: %d %v", n, err)
	}
}

func TestPeerCloseGivesEOF(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer a.Close()
	d.Close()
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(a); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read after peer close: %v", err)
	}
}

func TestManyConnections(t *testing.T) {
	p := newPair(t)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		d, a := p.connect(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer d.Close()
			defer a.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 100_000)
			go d.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(a, got); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("conn %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

func TestDialOfflinePeer(t *testing.T) {
	p := newPair(t)
	start := time.Now()
	_, err := p.a.Dial(p.ctx, "zzzzzzzzzzzzzzzz")
	if !errors.Is(err, ErrPeerOffline) {
		t.Fatalf("dial offline: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("offline took long")
	}
}

func TestDialTimeoutExplainsCandidates(t *testing.T) {
	r := memsignal.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := NewNode(r.Endpoint("aaaaaaaaaaaaaaaa"), Config{Interfaces: []string{"lo"}})
	r.Endpoint("cccccccccccccccc") // registered, never answers
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.Run(ctx) }()
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	_, err := a.Dial(dctx, "cccccccccccccccc")
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("dial silent peer: %v", err)
	}
	cancel()
	wg.Wait()
}

// A handshake ICE could not complete is ErrNoRoute, so that cmd can give
// its advice (kin doctor); the transport itself says what failed, no more.
func TestNoRouteIsErrNoRoute(t *testing.T) {
	h := &handshake{dialer: true, localKinds: map[string]bool{"host": true}, remoteKind: map[string]bool{"srflx": true}}
	h.timings.Signaling = time.Millisecond
	err := h.failure(errors.New("ICE failed"))
	if !errors.Is(err, ErrNoRoute) {
		t.Fatalf("failure() = %v, want ErrNoRoute", err)
	}
	if strings.Contains(err.Error(), "kin doctor") {
		t.Errorf("transport gives advice: %v", err)
	}
}

// slowOffers is a Signaler whose offers take a while to go out (a loaded
// machine, a busy WebSocket): meanwhile the candidates ICE gathers are
// being sent too.
type slowOffers struct{ Signaler }

func (s slowOffers) Send(ctx context.Context, m signal.Message) error {
	if m.Type == signal.TypeOffer {
		time.Sleep(300 * time.Millisecond)
	}
	return s.Signaler.Send(ctx, m)
}

// The dialer's candidates go out after its offer, never before it: the
// acceptor has no handshake for a candidate that overtakes the offer and
// drops it (seen in the NAT lab under load: "remote candidates: none").
func TestCandidatesFollowTheOffer(t *testing.T) {
	r := memsignal.New()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Interfaces: []string{"lo"}}
	a := NewNode(slowOffers{r.Endpoint("aaaaaaaaaaaaaaaa")}, cfg)
	b := NewNode(r.Endpoint("bbbbbbbbbbbbbbbb"), cfg)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, n := range []*Node{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}
	acc := make(chan error, 1)
	go func() {
		c, err := b.Accept(ctx)
		if err == nil {
			// On loopback a check from the dialer alone can connect; what
			// must not be lost is the dialer's candidates (behind NATs and
			// relays the acceptor needs them).
			// They may still be on their way when the connection is up.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				c.h.mu.Lock()
				got, kinds := c.h.remoteKind["host"], fmt.Sprint(c.h.remoteKind)
				c.h.mu.Unlock()
				if got {
					break
				}
				if time.Now().After(deadline) {
					err = fmt.Errorf("the acceptor got no host candidate from the dialer (remote: %s)", kinds)
					break
				}
			}
			c.Close()
		}
		acc <- err
	}()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, err := a.Dial(dctx, "bbbbbbbbbbbbbbbb")
	if err != nil {
		t.Fatalf("dial with a slow offer: %v", err)
	}
	c.Close()
	if err := <-acc; err != nil {
		t.Fatalf("accept: %v", err)
	}
}
