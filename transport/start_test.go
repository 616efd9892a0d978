package transport

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"kin/internal/switchsignal"
	"kin/keys"
	"kin/signal"
)

// Start owns the signaling client: two nodes register with a real
// signaling server, connect, move bytes, and stop cleanly.
func TestStartConnectsThroughSignalingServer(t *testing.T) {
	srv := signal.NewServer(signal.ServerConfig{})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func() *Node {
		id, err := keys.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		n, err := Start(ctx, StartConfig{Config: Config{Interfaces: []string{"lo"}}, Signal: signal.ClientConfig{URL: url, Signer: id.Signer}})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		if n.Registration().ID != id.ID() {
			t.Fatalf("registered as %q, want %q", n.Registration().ID, id.ID())
		}
		return n
	}
	a, b := start(), start()
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := b.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	d, err := a.Dial(ctx, b.Registration().ID)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	acc := <-accepted
	if acc == nil {
		t.FailNow()
	}
	msg := strings.Repeat("kin", 100_000)
	go d.Write([]byte(msg))
	h := sha256.New()
	if _, err := io.CopyN(h, acc, int64(len(msg))); err != nil {
		t.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != sha256.Sum256([]byte(msg)) {
		t.Fatal("SHA-256 differs")
	}
	d.Close()
	acc.Close()
	for _, n := range []*Node{a, b} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		<-n.Done()
		if err := n.Err(); err != nil {
			t.Errorf("after Close: %v", err)
		}
	}
}

// A signaling server that is not there: Start says so within its
// register timeout and leaves nothing running.
func TestStartUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + ln.Addr().String()
	ln.Close()
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), StartConfig{Signal: signal.ClientConfig{URL: url, Signer: id.Signer}, RegisterTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("start with no server: %v", err)
	}
}

// A server that later refuses the node's key stops it for good: Done
// closes, Err says it was refused, and Accept returns instead of waiting
// for offers that cannot come.
func TestStartedNodeStopsWhenRefused(t *testing.T) {
	sig := switchsignal.New()
	defer sig.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(ctx, StartConfig{Config: Config{Interfaces: []string{"lo"}}, Signal: signal.ClientConfig{URL: sig.URL, Signer: id.Signer}})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := n.Accept(ctx)
		accepted <- err
	}()
	sig.Refuse() // every client is told to go elsewhere; ours comes back to a refusal
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("the node kept running after the server refused it")
	}
	if err := n.Err(); !errors.Is(err, signal.ErrRefused) {
		t.Fatalf("Err = %v, want the refusal", err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, want net.ErrClosed", err)
	}
	n.Close()
}
