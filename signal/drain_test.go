package signal

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCloseDrainsQueuedMessages: a client that is slow to read when the
// server shuts down still gets everything queued for it, then the
// going-away notice, then a clean close, not a cut connection.
func TestCloseDrainsQueuedMessages(t *testing.T) {
	e := newEnv(t, ServerConfig{Rate: 1e6, Burst: 1e6, MaxMessageBytes: 1 << 20})
	ws, ch := rawConn(t, e)
	ws.SetReadLimit(1 << 20)
	bob := ident(t)
	reg, _ := signRegistration(bob.Signer, ch.Nonce)
	writeMessage(e.ctx, ws, reg)
	if m, err := readMessage(e.ctx, ws); err != nil || m.Type != TypeRegistered {
		t.Fatalf("register: %+v %v", m, err)
	}

	// alice queues 15 MB for bob, more than loopback's socket buffers
	// hold, while bob reads nothing.
	alice := e.client(ident(t))
	const n = 250
	sdp := strings.Repeat("x", 60<<10)
	for i := range n {
		if err := alice.Send(e.ctx, Message{Type: TypeOffer, To: bob.ID(), Session: "s", SDP: sdp}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	routed := func() bool {
		rec := httptest.NewRecorder()
		e.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return strings.Contains(rec.Body.String(), `kin_signal_messages_routed_total{type="offer"} `+strconv.Itoa(n)+"\n")
	}
	for !routed() {
		time.Sleep(5 * time.Millisecond) // until the server has queued them all
	}
	closed := make(chan struct{})
	go func() { e.srv.Close(); close(closed) }()
	for e.srv.Healthy() {
		time.Sleep(time.Millisecond) // until Close has begun
	}

	for i := range n {
		m, err := readMessage(e.ctx, ws)
		if err != nil || m.Type != TypeOffer || len(m.SDP) != len(sdp) {
			t.Fatalf("message %d of %d queued before the shutdown: %s %v", i+1, n, m.Type, err)
		}
	}
	m, err := readMessage(e.ctx, ws)
	if err != nil || m.Code != CodeGoingAway {
		t.Fatalf("after the queue: %+v %v, want going-away", m, err)
	}
	_, err = readMessage(e.ctx, ws)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("after going-away: %v, want a close with status going-away", err)
	}
	<-closed
}
