package cmd

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport"
)

// evilRouter is a signaling server that lies: messages addressed to victim
// go to impostor, and the impostor's replies claim to come from victim.
type evilRouter struct {
	mu       sync.Mutex
	boxes    map[keys.PeerID]chan signal.Message
	victim   keys.PeerID
	impostor keys.PeerID
}

type evilEndpoint struct {
	r  *evilRouter
	id keys.PeerID
}

func (e *evilEndpoint) Send(ctx context.Context, m signal.Message) error {
	m.V = signal.Version
	m.From = e.id
	if m.From == e.r.impostor {
		m.From = e.r.victim
	}
	to := m.To
	if to == e.r.victim {
		to = e.r.impostor
	}
	e.r.mu.Lock()
	box := e.r.boxes[to]
	e.r.mu.Unlock()
	if box == nil {
		return nil
	}
	select {
	case box <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *evilEndpoint) Recv(ctx context.Context) (signal.Message, error) {
	e.r.mu.Lock()
	box := e.r.boxes[e.id]
	e.r.mu.Unlock()
	select {
	case m := <-box:
		return m, nil
	case <-ctx.Done():
		return signal.Message{}, ctx.Err()
	}
}

func (r *evilRouter) endpoint(id keys.PeerID) *evilEndpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.boxes[id] = make(chan signal.Message, 256)
	return &evilEndpoint{r: r, id: id}
}

func TestLyingSignalingServerGetsRefusedHostKey(t *testing.T) {
	alice, _ := keys.NewIdentity()
	mallory, _ := keys.NewIdentity()
	bob, _ := keys.NewIdentity()
	r := &evilRouter{boxes: map[keys.PeerID]chan signal.Message{}, victim: alice.ID(), impostor: mallory.ID()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	cfg := transport.Config{Interfaces: []string{"lo"}}
	mNode := transport.NewNode(r.endpoint(mallory.ID()), cfg)
	bNode := transport.NewNode(r.endpoint(bob.ID()), cfg)
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

	var logs strings.Builder
	e := &env{log: newLogger(io.Discard, false), stderr: &logs}
	p := &peer{id: bob, url: "ws://evil", node: bNode}
	client, _, err := p.dial(ctx, e, alice.Public(), keys.NewSecret(), "alice")
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
