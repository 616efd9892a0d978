package signal

import (
	"context"
	"strings"
	"testing"
	"time"
)

// With ICE limited to loopback, the built-in server listens on loopback
// only, and a client registers at the URL it names.
func TestListenLocalOnLoopback(t *testing.T) {
	ln, url, err := ListenLocal([]string{"lo"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "ws://127.0.0.1:") || !strings.HasPrefix(ln.Addr().String(), "127.0.0.1:") {
		t.Fatalf("listens on %s, named %s; want loopback", ln.Addr(), url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := NewServer(ServerConfig{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	id := ident(t)
	c := NewClient(ClientConfig{URL: url, Signer: id.Signer})
	cctx, ccancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(cctx) }()
	if reg, err := c.Ready(ctx); err != nil || reg.ID != id.ID() {
		t.Fatalf("register at %s: %v", url, err)
	}
	ccancel()
	<-ran
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
