package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// laneTransfer writes size random bytes on from and checks them by SHA-256
// as they arrive on to.
func laneTransfer(t *testing.T, from, to net.Conn, size int) {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := from.Write(payload)
		errc <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, to, int64(size)); err != nil {
		t.Fatalf("read lane: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write lane: %v", err)
	}
	if [32]byte(h.Sum(nil)) != want {
		t.Fatal("SHA-256 of what arrived on the lane differs")
	}
}

// Either end opens extra lanes; each is its own QUIC connection on the
// connection's 5-tuple and carries bytes both ways, beside the main stream.
func TestLanesBothWays(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	if !d.HasLanes() || !a.HasLanes() {
		t.Fatal("a QUIC connection should have lanes")
	}
	ctx := p.ctx
	for name, ends := range map[string][2]*Conn{"dialer opens": {d, a}, "acceptor opens": {a, d}} {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			const n = 3
			opened := make([]net.Conn, n)
			accepted := make([]net.Conn, n)
			for i := range n {
				l, err := ends[0].OpenLane(ctx)
				if err != nil {
					t.Fatalf("open lane: %v", err)
				}
				if _, err := l.Write([]byte{byte(i)}); err != nil { // a lane reaches the peer with its first bytes
					t.Fatal(err)
				}
				opened[i] = l
			}
			for range n {
				l, err := ends[1].AcceptLane(ctx)
				if err != nil {
					t.Fatalf("accept lane: %v", err)
				}
				var b [1]byte
				if _, err := io.ReadFull(l, b[:]); err != nil {
					t.Fatal(err)
				}
				accepted[b[0]] = l
				// Same 5-tuple as the connection's QUIC.
				if l.LocalAddr().String() != ends[1].qc.LocalAddr().String() || l.RemoteAddr().String() != ends[1].qc.RemoteAddr().String() {
					t.Errorf("lane %s -> %s, connection %s -> %s", l.LocalAddr(), l.RemoteAddr(), ends[1].qc.LocalAddr(), ends[1].qc.RemoteAddr())
				}
			}
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					laneTransfer(t, opened[i], accepted[i], 4<<20)
					laneTransfer(t, accepted[i], opened[i], 1<<20)
				}()
			}
			wg.Add(1)
			go func() { defer wg.Done(); transfer(t, d, a, 4<<20) }() // the main stream at the same time
			wg.Wait()
			// Closing a lane ends it at the peer, not the connection.
			for i := range n {
				opened[i].Close()
				if _, err := accepted[i].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
					t.Errorf("read on a lane the peer closed: %v, want EOF", err)
				}
				accepted[i].Close()
			}
		})
	}
	transfer(t, d, a, 1<<20)
}

func TestNoLanesOnTheDataChannel(t *testing.T) {
	cfg := Config{Interfaces: []string{"lo"}, Lane: LaneForceDC}
	p := newPairWith(t, cfg, cfg)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	if d.HasLanes() {
		t.Error("a data-channel connection claims lanes")
	}
	if d.Binding() != nil {
		t.Error("a data-channel connection has a QUIC binding")
	}
	if _, err := d.OpenLane(p.ctx); !errors.Is(err, ErrNoLanes) {
		t.Errorf("open lane: %v, want ErrNoLanes", err)
	}
	ctx, cancel := context.WithCancel(p.ctx)
	cancel()
	if _, err := a.AcceptLane(ctx); !errors.Is(err, ErrNoLanes) {
		t.Errorf("accept lane: %v, want ErrNoLanes", err)
	}
}

// The two ends of one QUIC connection derive the same binding, and two
// connections different ones: a session compares them inside SSH before
// it trusts lanes (someone in the middle would hold two connections).
func TestBindingIsTheSameOnBothEnds(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	d2, a2 := p.connect(t)
	defer d2.Close()
	defer a2.Close()
	if b := d.Binding(); len(b) != 32 || !bytes.Equal(b, a.Binding()) {
		t.Fatalf("bindings %x and %x, want the same 32 bytes", b, a.Binding())
	}
	if bytes.Equal(d.Binding(), d2.Binding()) {
		t.Error("two connections have the same binding")
	}
}

// A lane must come from the connection's own peer address: one from
// another socket is refused even with the peer's certificate (as if it had
// leaked), and AcceptLane goes on to the next lane.
func TestAcceptLaneRefusesAnotherAddress(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	ctx := p.ctx

	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: uc}
	defer tr.Close()
	tlsc := p.a.quic.clientTLS(p.b.quic.fp)
	tlsc.NextProtos = []string{laneALPN}
	stranger, err := tr.Dial(ctx, a.qc.LocalAddr(), tlsc, quicConfig())
	if err != nil {
		t.Fatalf("the stranger's QUIC handshake (the certificate is the peer's): %v", err)
	}
	st, err := stranger.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("stranger")); err != nil {
		t.Fatal(err)
	}
	// Wait until the stranger's lane is queued, so it comes before the
	// real one.
	for len(a.h.qn.lanes) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the stranger's lane never arrived")
		case <-time.After(time.Millisecond):
		}
	}

	real, err := d.OpenLane(ctx)
	if err != nil {
		t.Fatalf("open lane: %v", err)
	}
	defer real.Close()
	if _, err := real.Write([]byte("real")); err != nil {
		t.Fatal(err)
	}
	got, err := a.AcceptLane(ctx)
	if err != nil {
		t.Fatalf("accept lane: %v", err)
	}
	defer got.Close()
	b := make([]byte, 4)
	if _, err := io.ReadFull(got, b); err != nil || string(b) != "real" {
		t.Fatalf("accepted a lane that says %q (%v), want the real one", b, err)
	}
	if got.RemoteAddr().String() != a.qc.RemoteAddr().String() {
		t.Errorf("accepted a lane from %s, the peer is at %s", got.RemoteAddr(), a.qc.RemoteAddr())
	}
	select {
	case <-stranger.Context().Done():
	case <-ctx.Done():
		t.Fatal("the stranger's lane is still open")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(stranger.Context()); !errors.As(err, &ae) || ae.ErrorCode != quicCodeRefused {
		t.Errorf("the stranger's lane ended with %v, want refused (code %d)", err, quicCodeRefused)
	}
	transfer(t, d, a, 1<<20) // the connection goes on
}
