package signal

import (
	"context"
	"testing"
	"time"

	"kin/keys"
)

func (e *testEnv) clientAs(id *keys.Identity, mode, instance string) *Client {
	c := NewClient(ClientConfig{URL: e.url, Signer: id.Signer, Mode: mode, Instance: instance})
	e.wg.Add(1)
	go func() { defer e.wg.Done(); c.Run(e.ctx) }()
	if _, err := c.Ready(e.ctx); err != nil {
		e.t.Fatalf("register: %v", err)
	}
	return c
}

// Several registrations of one key: each session's messages reach the
// registration in it, whichever registered last (issue 13, item 4).
func TestRegistrationsOfOneKeyDoNotStealSessions(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	me, bob := ident(t), ident(t)
	agent := e.clientAs(me, ModeListen, "agent")
	sends := []*Client{e.clientAs(me, ModeDial, "send1"), e.clientAs(me, ModeDial, "send2")}
	ticket := e.clientAs(me, ModeTicket, "tick")
	b := e.client(bob)

	// Each sender's offer gets its own answer and candidates back.
	for i, s := range sends {
		session := string(rune('a' + i))
		s.Send(e.ctx, Message{Type: TypeOffer, To: bob.ID(), Session: session, SDP: "v=0"})
		if m := recv(t, b); m.Session != session {
			t.Fatalf("bob got %+v", m)
		}
	}
	for i := len(sends) - 1; i >= 0; i-- {
		session := string(rune('a' + i))
		b.Send(e.ctx, Message{Type: TypeAnswer, To: me.ID(), Session: session, SDP: "v=0"})
		b.Send(e.ctx, Message{Type: TypeCandidate, To: me.ID(), Session: session, Candidate: "{}"})
		for _, typ := range []string{TypeAnswer, TypeCandidate} {
			if m := recv(t, sends[i]); m.Type != typ || m.Session != session {
				t.Fatalf("sender %d got %+v, want %s of session %s", i, m, typ, session)
			}
		}
	}
	// An offer without an instance goes to the listener, not to the newer
	// dial-only or ticket registrations; its candidates follow it.
	b.Send(e.ctx, Message{Type: TypeOffer, To: me.ID(), Session: "x", SDP: "v=0"})
	b.Send(e.ctx, Message{Type: TypeCandidate, To: me.ID(), Session: "x", Candidate: "{}"})
	for _, typ := range []string{TypeOffer, TypeCandidate} {
		if m := recv(t, agent); m.Type != typ || m.Session != "x" {
			t.Fatalf("agent got %+v", m)
		}
	}
	// An offer naming an instance (from its ticket) goes there only.
	b.Send(e.ctx, Message{Type: TypeOffer, To: me.ID(), Session: "y", SDP: "v=0", Instance: "tick"})
	if m := recv(t, ticket); m.Type != TypeOffer || m.Session != "y" {
		t.Fatalf("ticket registration got %+v", m)
	}
	b.Send(e.ctx, Message{Type: TypeOffer, To: me.ID(), Session: "z", SDP: "v=0", Instance: "send1"})
	if m := recv(t, b); m.Type != TypeError || m.Code != CodeOffline || m.Session != "z" {
		t.Fatalf("offer to a dial-only instance: %+v", m)
	}
	b.Send(e.ctx, Message{Type: TypeOffer, To: me.ID(), Session: "w", SDP: "v=0", Instance: "gone"})
	if m := recv(t, b); m.Type != TypeError || m.Code != CodeOffline || m.Session != "w" {
		t.Fatalf("offer to a missing instance: %+v", m)
	}
}

// A key registered only to dial is not online for presence: offers to it
// would have nowhere to go.
func TestDialOnlyIsNotOnline(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	me := ident(t)
	e.clientAs(me, ModeDial, "")
	asker := e.client(ident(t))
	online, err := asker.Online(e.ctx, me.ID())
	if err != nil || online[me.ID()] {
		t.Fatalf("dial-only registration is online: %v %v", online, err)
	}
	e.clientAs(me, ModeListen, "")
	online, err = asker.Online(e.ctx, me.ID())
	if err != nil || !online[me.ID()] {
		t.Fatalf("listener is not online: %v %v", online, err)
	}
}

// slowBus is a Bus whose Join waits until the test lets it go: the window
// between a registration counting here and the bus knowing of it.
type slowBus struct {
	hold    chan keys.PeerID // Join sends its id here, then waits
	release chan struct{}
}

func (b *slowBus) Join(ctx context.Context, id keys.PeerID) error {
	select {
	case b.hold <- id:
		<-b.release
	default: // nobody is watching: no wait
	}
	return nil
}
func (b *slowBus) Leave(context.Context, keys.PeerID) error { return nil }
func (b *slowBus) Publish(context.Context, Message) (bool, error) {
	return false, nil
}
func (b *slowBus) Online(context.Context, keys.PeerID) (bool, error) { return false, nil }

// An offer routed to a peer while its registration is still being
// announced on the bus reaches it after "registered", not before (a client
// takes any other first message as a failed registration and the offer
// was lost: seen as a failover test that lost a message now and then).
func TestOfferDuringRegistrationIsDelivered(t *testing.T) {
	bus := &slowBus{hold: make(chan keys.PeerID), release: make(chan struct{})}
	e := newEnv(t, ServerConfig{Bus: bus})
	cb := e.client(ident(t)) // registered before the test holds Join
	a := ident(t)
	ca := NewClient(ClientConfig{URL: e.url, Signer: a.Signer})
	e.wg.Add(1)
	go func() { defer e.wg.Done(); ca.Run(e.ctx) }()
	select {
	case id := <-bus.hold:
		if id != a.ID() {
			t.Fatalf("bus joined %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a never registered")
	}
	if !e.srv.Online(a.ID()) {
		t.Fatal("a is not counted while its Join runs")
	}
	if err := cb.Send(e.ctx, Message{Type: TypeOffer, To: a.ID(), Session: "s", SDP: "v=0"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the offer is queued for a (or, before the fix, written)
	close(bus.release)
	if m := recv(t, ca); m.Type != TypeOffer || m.From != cb.Registration().ID {
		t.Fatalf("a got %+v", m)
	}
}
