package agent

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"kin/keys"
	"kin/session"
)

// startPeer starts a peer for id on loopback: with a built-in signaling
// server when url is "".
func startPeer(t *testing.T, ctx context.Context, id *keys.Identity, url string) *Peer {
	t.Helper()
	p, err := StartPeer(ctx, PeerConfig{Identity: id, Signal: url, Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// A peer with a built-in signaling server serves a ticket holder who
// dials it (SSH checks both ends) while wait runs, and ServeWhile returns
// what wait returned.
func TestServeWhileServesUntilWaitReturns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, bob := newIdentity(t), newIdentity(t)
	ap := startPeer(t, ctx, alice, "")
	bp := startPeer(t, ctx, bob, ap.URL)
	secret := keys.NewSecret()
	srv, err := session.NewServer(session.ServerConfig{Identity: alice, Tickets: session.OneTicket(secret, keys.Permissions{Ports: []int{1}})})
	if err != nil {
		t.Fatal(err)
	}
	dialed := make(chan error, 1)
	go func() {
		c, _, err := bp.Link().Dial(ctx, alice.Public(), secret, "")
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	settled := errors.New("settled")
	err = ap.ServeWhile(ctx, srv, func(ctx context.Context) error {
		if err := <-dialed; err != nil {
			t.Errorf("bob could not reach alice: %v", err)
		}
		return settled
	})
	if !errors.Is(err, settled) {
		t.Fatalf("ServeWhile returned %v, want wait's error", err)
	}
}

// One agent per kin home: a second Up stops at the control socket,
// before it registers.
func TestSecondUpOfAHomeIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	home := filepath.Join(t.TempDir(), "home")
	sig := startPeer(t, ctx, newIdentity(t), "") // runs the signaling server
	id := newIdentity(t)
	cfg := UpConfig{Home: home, Peer: PeerConfig{Identity: id, Signal: sig.URL, Interfaces: []string{"lo"}}, Server: session.ServerConfig{Identity: id}}
	ready := make(chan *Peer, 1)
	first := cfg
	first.Ready = func(p *Peer) { ready <- p }
	upped := make(chan error, 1)
	go func() { upped <- Up(ctx, first) }()
	var p *Peer
	select {
	case p = <-ready:
	case err := <-upped:
		t.Fatalf("the first Up: %v", err)
	}
	if r, err := Hello(ctx, home); err != nil || r.ID != id.ID() || r.Instance != p.Instance || r.Signal != sig.URL {
		t.Errorf("Hello: %+v, %v", r, err)
	}
	if err := Up(ctx, cfg); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("the second Up: %v, want ErrAlreadyRunning", err)
	}
	cancel()
	if err := <-upped; err != nil {
		t.Errorf("the first Up after its ctx ended: %v", err)
	}
}

func newIdentity(t *testing.T) *keys.Identity {
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
