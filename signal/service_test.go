package signal

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// A whole service as kin signal runs it: a peer that registers gets the
// built-in TURN's and the extra ICE servers, with credentials the built-in
// relay accepts; the service stops with its ctx.
func TestServiceHandsOutItsRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := OpenService(ctx, ServiceConfig{
		TURN:       "127.0.0.1:0",
		ICEServers: []ICEServer{{URLs: []string{"turn:turn.example.org:3478"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- svc.Serve(sctx, ln) }()

	c := NewClient(ClientConfig{URL: "ws://" + ln.Addr().String(), Signer: ident(t).Signer})
	ran := make(chan error, 1)
	go func() { ran <- c.Run(sctx) }()
	reg, err := c.Ready(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var relay ICEServer
	var urls []string
	for _, s := range reg.ICEServers {
		urls = append(urls, s.URLs...)
		if slices.Contains(s.URLs, "turn:"+svc.TURN.Addr()+"?transport=udp") {
			relay = s
		}
	}
	if !slices.Contains(urls, "turn:turn.example.org:3478") {
		t.Errorf("the extra ICE server is not handed out: %v", urls)
	}
	if relay.Username == "" {
		t.Fatalf("no credentialed built-in relay among %+v", reg.ICEServers)
	}
	pc, err := allocate(t, svc.TURN.Addr(), relay.Username, relay.Credential)
	if err != nil {
		t.Fatalf("the built-in relay refuses the credentials handed out: %v", err)
	}
	pc.Close()

	stop()
	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Serve: %v", err)
	}
	<-ran
}

// AskOnline tells a registered peer from one that is not, without being
// one that takes offers itself.
func TestAskOnline(t *testing.T) {
	e := newEnv(t, ServerConfig{})
	up, down := ident(t), ident(t)
	e.client(up)
	reg, online, err := AskOnline(e.ctx, e.url, nil, up.ID(), down.ID())
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID == "" || reg.ID == up.ID() || reg.ID == down.ID() {
		t.Errorf("asked as %q", reg.ID)
	}
	if !online[up.ID()] || online[down.ID()] {
		t.Errorf("online: %v", online)
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Second) // a server that is not there stays away
	defer cancel()
	if reg, _, err := AskOnline(ctx, "ws://127.0.0.1:1", nil, up.ID()); err == nil || reg.ID != "" {
		t.Errorf("a server that is not there: %+v, %v", reg, err)
	}
}
