package signal

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v2"

	"kin/keys"
	"kin/pionlog"
)

// startTURN serves the embedded relay on loopback for one test.
func startTURN(t *testing.T, cfg TURNConfig) (addr string, stats *RelayStats) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.PacketConn = pc
	cfg.RelayIP = net.ParseIP("127.0.0.1")
	cfg.Stats = &RelayStats{}
	// These tests are about credentials and caps; the peers they relay to
	// are on loopback, which the relay refuses unless allowed.
	cfg.RelayAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeTURN(ctx, cfg) }()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String(), cfg.Stats
}

// allocate asks the relay at addr for an allocation with the credentials.
func allocate(t *testing.T, addr, user, pass string) (net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass, Realm: turnRealm, RTO: 200 * time.Millisecond,
		LoggerFactory: pionlog.Factory(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	return c.Allocate()
}

func TestTURNRelaysForCredentialedPeers(t *testing.T) {
	secret := []byte("s3cret")
	addr, stats := startTURN(t, TURNConfig{Secret: secret})
	id := keys.PeerID("aaaaaaaaaaaaaaaa")
	user, pass := TURNCredentials(secret, id, time.Now(), time.Hour)
	if !strings.HasSuffix(user, ":"+string(id)) {
		t.Fatalf("username %q does not name the peer", user)
	}
	relay, err := allocate(t, addr, user, pass)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()

	// A peer on the other side of the relay echoes what it gets.
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				return
			}
			peer.WriteTo(buf[:n], from)
		}
	}()
	msg := []byte("through the relay")
	got := make([]byte, 1500)
	relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	var n int
	for i := 0; i < 10 && n == 0; i++ { // the first send also creates the permission
		if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		n, _, err = relay.ReadFrom(got)
	}
	if !bytes.Equal(got[:n], msg) {
		t.Fatalf("relayed %q, %v", got[:n], err)
	}
	if stats.Allocations.Load() != 1 || stats.RelayedBytes.Load() < int64(2*len(msg)) {
		t.Fatalf("stats: %d allocations, %d bytes", stats.Allocations.Load(), stats.RelayedBytes.Load())
	}
}

func TestTURNRefusesWithoutValidCredentials(t *testing.T) {
	secret := []byte("s3cret")
	addr, stats := startTURN(t, TURNConfig{Secret: secret})
	id := keys.PeerID("aaaaaaaaaaaaaaaa")
	expiredUser, expiredPass := TURNCredentials(secret, id, time.Now().Add(-2*time.Hour), time.Hour)
	forgedUser, forgedPass := TURNCredentials([]byte("guess"), id, time.Now(), time.Hour)
	for name, cred := range map[string][2]string{
		"expired":      {expiredUser, expiredPass},
		"wrong secret": {forgedUser, forgedPass},
		"no expiry":    {"mallory", "x"},
	} {
		if relay, err := allocate(t, addr, cred[0], cred[1]); err == nil {
			relay.Close()
			t.Errorf("%s credentials got an allocation", name)
		}
	}
	if n := stats.Allocations.Load(); n != 0 {
		t.Fatalf("%d allocations", n)
	}
}

func TestTURNCapsBandwidthAndLifetime(t *testing.T) {
	secret := []byte("s3cret")
	addr, stats := startTURN(t, TURNConfig{Secret: secret, BytesPerSecond: 100 << 10, MaxLifetime: 2 * time.Second})
	user, pass := TURNCredentials(secret, "aaaaaaaaaaaaaaaa", time.Now(), time.Hour)
	relay, err := allocate(t, addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// 1 MB in a burst is ten times the per-second cap: most is dropped.
	pkt := make([]byte, 1000)
	for range 1000 {
		relay.WriteTo(pkt, sink.LocalAddr())
	}
	deadline := time.Now().Add(5 * time.Second)
	for stats.Dropped.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if stats.Dropped.Load() == 0 || stats.RelayedBytes.Load() > 200<<10 {
		t.Fatalf("cap not enforced: relayed %d bytes, dropped %d packets", stats.RelayedBytes.Load(), stats.Dropped.Load())
	}
	// After the lifetime nothing more is relayed.
	time.Sleep(2500 * time.Millisecond)
	before := stats.RelayedBytes.Load()
	for range 10 {
		relay.WriteTo(pkt, sink.LocalAddr())
	}
	time.Sleep(200 * time.Millisecond)
	if after := stats.RelayedBytes.Load(); after != before {
		t.Fatalf("relay still carried %d bytes after its lifetime", after-before)
	}
}
