package netcheck

import (
	"context"
	"net"
	"testing"
	"time"

	"kin/keys"
	"kin/signal"
)

// On loopback there is no NAT: the STUN servers see one of this machine's
// own addresses, and the relay allocates with good credentials only.
func TestCheckOnLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	main, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alt, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("s")
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() {
		signal.ServeTURN(sctx, signal.TURNConfig{PacketConn: main, RelayIP: net.IPv4(127, 0, 0, 1), Secret: secret})
		done <- struct{}{}
	}()
	go func() { signal.ServeSTUN(sctx, alt, main); done <- struct{}{} }()
	defer func() { stop(); <-done; <-done }()

	user, pass := signal.TURNCredentials(secret, keys.PeerID("aaaaaaaaaaaaaaaa"), time.Now(), time.Hour)
	r, err := Check(ctx, []signal.ICEServer{
		{URLs: []string{"stun:" + main.LocalAddr().String()}},
		{URLs: []string{"stun:" + alt.LocalAddr().String()}},
		{URLs: []string{"turn:" + main.LocalAddr().String()}, Username: user, Credential: pass},
		{URLs: []string{"turn:" + main.LocalAddr().String()}, Username: user, Credential: "wrong"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.NAT != NoNAT || len(r.Mappings) != 2 || r.Mappings[0].Seen == "" || r.Mappings[0].Seen != r.Mappings[1].Seen {
		t.Fatalf("report %+v", r)
	}
	if len(r.Relays) != 2 || r.Relays[0].Err != nil || r.Relays[0].Relay == "" || r.Relays[1].Err == nil {
		t.Fatalf("relays %+v", r.Relays)
	}
}

func TestUDPBlockedWhenNobodyAnswers(t *testing.T) {
	// A socket that reads and never answers stands for a network that drops UDP.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r, err := Check(context.Background(), []signal.ICEServer{{URLs: []string{"stun:" + silent.LocalAddr().String()}}})
	if err != nil || r.NAT != UDPBlocked || r.Mappings[0].Seen != "" {
		t.Fatalf("%+v %v", r, err)
	}
}

// STUNOnly keeps each stun: URL, as a server of its own, and drops the
// TURN ones, so that a NAT check allocates no relay.
func TestSTUNOnly(t *testing.T) {
	got := STUNOnly([]signal.ICEServer{
		{URLs: []string{"stun:a.example:3478", "turn:a.example:3478"}, Username: "u", Credential: "c"},
		{URLs: []string{"turns:b.example:5349"}},
		{URLs: []string{"stun:c.example:3479"}},
	})
	if len(got) != 2 || got[0].URLs[0] != "stun:a.example:3478" || got[1].URLs[0] != "stun:c.example:3479" || got[0].Username != "" {
		t.Fatalf("STUNOnly = %+v", got)
	}
}
