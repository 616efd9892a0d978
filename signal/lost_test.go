package signal

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A client tells its owner when the registration drops (once per drop)
// and when it comes back; a server that then refuses the key ends Run
// with ErrRefused, so whoever waits on Run learns it.
func TestClientTellsLostRegainedAndRefused(t *testing.T) {
	srv := NewServer(ServerConfig{})
	var refuse atomic.Bool
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !refuse.Load() {
			srv.ServeHTTP(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		writeMessage(r.Context(), ws, Message{V: Version, Type: TypeError, Code: CodeAuth, Reason: "this key is banned here"})
		ws.Close(websocket.StatusPolicyViolation, "banned")
	}))
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := ident(t)
	lost := make(chan error, 10)
	regained := make(chan Registration, 10)
	c := NewClient(ClientConfig{
		URL: "ws" + strings.TrimPrefix(hs.URL, "http"), Signer: id.Signer,
		Lost:     func(err error) { lost <- err },
		Regained: func(r Registration) { regained <- r },
	})
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	if _, err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if len(regained) != 0 {
		t.Fatal("the first registration is no regained one")
	}
	srv.current(id.ID()).cancel() // the server drops it
	select {
	case <-lost:
	case <-ctx.Done():
		t.Fatal("Lost not called")
	}
	select {
	case r := <-regained:
		if r.ID != id.ID() {
			t.Fatalf("regained as %s", r.ID)
		}
	case <-ctx.Done():
		t.Fatal("Regained not called")
	}
	if len(lost) != 0 {
		t.Fatalf("Lost called %d more times for one drop", len(lost))
	}

	refuse.Store(true)
	srv.current(id.ID()).cancel()
	select {
	case err := <-ran:
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "banned") {
			t.Fatalf("Run returned %v, want the refusal", err)
		}
	case <-ctx.Done():
		t.Fatal("Run kept going after a refusal")
	}
	if len(lost) != 1 || len(regained) != 0 {
		t.Fatalf("after the refusal: %d lost, %d regained; want 1, 0", len(lost), len(regained))
	}
}
