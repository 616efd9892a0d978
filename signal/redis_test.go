package signal

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"kin/internal/testredis"
)

// instance is one signaling server joined to the others through Redis.
type instance struct {
	srv    *Server
	hs     *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func startInstance(t *testing.T, redisURL string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bus, err := NewRedisBus(ctx, redisURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{srv: NewServer(ServerConfig{Bus: bus}), cancel: cancel, done: make(chan struct{})}
	go func() { defer close(in.done); bus.Run(ctx, in.srv.Deliver) }()
	in.hs = httptest.NewServer(in.srv)
	t.Cleanup(in.stop)
	return in
}

func (in *instance) url() string { return "ws" + strings.TrimPrefix(in.hs.URL, "http") }

func (in *instance) stop() {
	in.srv.Close()
	in.hs.Close()
	in.cancel()
	<-in.done
}

// balancer is a plain TCP load balancer: each connection goes to the first
// backend that accepts it.
func balancer(t *testing.T, backends ...string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for _, b := range backends {
					up, err := net.DialTimeout("tcp", b, time.Second)
					if err != nil {
						continue
					}
					defer up.Close()
					go func() { io.Copy(up, c); up.Close() }()
					io.Copy(c, up)
					return
				}
			}()
		}
	}()
	return "ws://" + ln.Addr().String()
}

func TestInstancesRouteThroughRedis(t *testing.T) {
	redisURL := testredis.Start(t)
	one, two := startInstance(t, redisURL), startInstance(t, redisURL)
	lb := balancer(t, strings.TrimPrefix(one.hs.URL, "http://"), strings.TrimPrefix(two.hs.URL, "http://"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	run := func(url string) (*Client, Registration) {
		id := ident(t)
		c := NewClient(ClientConfig{URL: url, Signer: id.Signer})
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
		reg, err := c.Ready(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c, reg
	}
	a, ra := run(lb)        // lands on instance one
	b, rb := run(two.url()) // instance two
	if !one.srv.Online(ra.ID) || !two.srv.Online(rb.ID) {
		t.Fatal("peers not where the test put them")
	}
	online, err := a.Online(ctx, rb.ID)
	if err != nil || !online[rb.ID] {
		t.Fatalf("presence across instances: %v %v", online, err)
	}
	if err := a.Send(ctx, Message{Type: TypeOffer, To: rb.ID, Session: "s1", SDP: "v=0"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, b); m.Type != TypeOffer || m.From != ra.ID || m.SDP != "v=0" {
		t.Fatalf("instance two delivered %+v", m)
	}

	// Instance one dies: its peer re-registers through the balancer on
	// instance two within seconds, and is reachable again.
	start := time.Now()
	one.stop()
	for !two.srv.Online(ra.ID) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the peer did not re-register on the other instance within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("re-registered on the other instance after %s", time.Since(start).Round(time.Millisecond))
	if err := b.Send(ctx, Message{Type: TypeOffer, To: ra.ID, Session: "s2", SDP: "v=0"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, a); m.Type != TypeOffer || m.From != rb.ID {
		t.Fatalf("after failover: %+v", m)
	}
	// A peer nobody holds is offline everywhere.
	online, err = b.Online(ctx, ident(t).ID())
	if err != nil || len(online) != 1 {
		t.Fatalf("%v %v", online, err)
	}
	for _, v := range online {
		if v {
			t.Fatal("a stranger is online")
		}
	}
}
