package cmd

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"kin/internal/memsignal"
	"kin/keys"
	"kin/session"
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
