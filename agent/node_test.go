package agent

import (
	"testing"

	"kin/keys"
)

// A share asked through the handler grants its port to the secret until
// the command stops it; Hello says what the handler was given.
func TestNodeHandlerSharesUntilStopped(t *testing.T) {
	h := &NodeHandler{Reply: Reply{Signal: "ws://127.0.0.1:7000", Instance: "i1"}}
	if r := h.Hello(); r.Signal != "ws://127.0.0.1:7000" || r.Instance != "i1" {
		t.Fatalf("hello: %+v", r)
	}
	secret := keys.NewSecret()
	stop, err := h.Share(3000, false, secret)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := h.Shares.Tickets(secret); !ok || !p.AllowsPort(3000) || p.AllowsPort(3001) {
		t.Fatalf("while shared: %v %v", p, ok)
	}
	stop()
	if _, ok := h.Shares.Tickets(secret); ok {
		t.Fatal("the ticket works after its share stopped")
	}
}
