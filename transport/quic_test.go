package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v3"
	"go.uber.org/goleak"
)

// transfer moves size random bytes from -> to and back to -> from at the
// same time, and checks both by SHA-256.
func transfer(t *testing.T, from, to *Conn, size int) {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	var wg sync.WaitGroup
	for _, pair := range [][2]*Conn{{from, to}, {to, from}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := pair[0].Write(payload); err != nil {
				t.Errorf("write: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			h := sha256.New()
			if _, err := io.CopyN(h, pair[1], int64(size)); err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if [32]byte(h.Sum(nil)) != want {
				t.Error("SHA-256 of what arrived differs")
			}
		}()
	}
	wg.Wait()
}

func wantLane(t *testing.T, lane string, cs ...*Conn) {
	t.Helper()
	for _, c := range cs {
		if got := c.Lane(); got != lane {
			t.Fatalf("lane %q, want %q (info %+v)", got, lane, c.Info())
		}
	}
}

func TestQUICLaneOnLoopback(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	wantLane(t, "direct, QUIC", d, a)
	if ti := d.Info().Timings; ti.QUIC == 0 || ti.Connected < ti.QUIC {
		t.Errorf("timings %+v", ti)
	}
	// The QUIC connection runs on the 5-tuple ICE selected.
	la := d.qc.LocalAddr().String()
	if !strings.HasPrefix(d.Info().Local, la+" ") {
		t.Errorf("QUIC from %s, ICE selected %s", la, d.Info().Local)
	}
	transfer(t, d, a, 32<<20)
}

func TestForcedDataChannel(t *testing.T) {
	cfg := Config{Interfaces: []string{"lo"}, Lane: LaneForceDC}
	p := newPairWith(t, cfg, cfg)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	wantLane(t, "direct, data channel", d, a)
	if d.h.qn != nil || a.h.qn != nil {
		t.Error("forced data channel, yet the sockets belong to QUIC")
	}
	transfer(t, d, a, 16<<20)
}

func TestLaneSettingFromEnvironment(t *testing.T) {
	t.Setenv("KIN_LANE", "datachannel")
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	wantLane(t, "direct, data channel", d, a)
}

// A peer that does not offer QUIC (built before it, or told not to) gets
// the data channel, whichever end it is.
func TestPeerWithoutQUIC(t *testing.T) {
	auto := Config{Interfaces: []string{"lo"}}
	old := Config{Interfaces: []string{"lo"}, Lane: LaneForceDC}
	for name, cfgs := range map[string][2]Config{"dialer": {old, auto}, "acceptor": {auto, old}} {
		t.Run("old "+name, func(t *testing.T) {
			p := newPairWith(t, cfgs[0], cfgs[1])
			d, a := p.connect(t)
			defer d.Close()
			defer a.Close()
			wantLane(t, "direct, data channel", d, a)
			transfer(t, d, a, 4<<20)
		})
	}
}

// When both offer QUIC but the dialer settles for the data channel (the
// QUIC handshake failed), the data channel runs on sockets quic-go owns,
// where quic-go queues only 32 non-QUIC packets and drops the rest: SCTP
// must still deliver every byte.
func TestDataChannelOnQUICSockets(t *testing.T) {
	p := newPair(t)
	p.a.skipQUICDial = true
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	wantLane(t, "direct, data channel", d, a)
	if d.h.qn == nil || a.h.qn == nil {
		t.Fatal("the sockets should belong to QUIC here")
	}
	transfer(t, d, a, 16<<20)
}

// Closing the peer connection closes QUIC, and the other way round.
func TestQUICAndPeerConnectionCloseTogether(t *testing.T) {
	p := newPair(t)
	t.Run("peer connection closes", func(t *testing.T) {
		d, a := p.connect(t)
		defer a.Close()
		wantLane(t, "direct, QUIC", d)
		d.pc.Close() // as when ICE fails
		<-d.qc.Context().Done()
		<-d.closed
		if _, err := d.Read(make([]byte, 1)); err == nil {
			t.Error("read after the peer connection closed")
		}
		// The other end notices by ICE consent or QUIC's idle timeout
		// (about 10 s, like a vanished peer): not waited for here.
	})
	t.Run("QUIC closes", func(t *testing.T) {
		d, a := p.connect(t)
		defer d.Close()
		wantLane(t, "direct, QUIC", a)
		a.qc.CloseWithError(9, "gone")
		<-a.closed
		a.closeFromPeer() // returns once the first shutdown has finished
		if s := a.pc.ConnectionState(); s != webrtc.PeerConnectionStateClosed {
			t.Errorf("peer connection %s after QUIC closed", s)
		}
		d.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := d.Read(make([]byte, 1)); err == nil || errors.Is(err, errDeadline) {
			t.Errorf("the other end should see the connection end: %v", err)
		}
	})
}

var errDeadline = os.ErrDeadlineExceeded

// If ICE selects another pair, QUIC cannot follow the peer's address:
// the connection fails with ErrPathChanged rather than stall.
func TestQUICFailsWhenPathChanges(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	ice := d.pc.SCTP().Transport().ICETransport()
	same, err := ice.GetSelectedCandidatePair()
	if err != nil || same == nil {
		t.Fatalf("selected pair: %v", err)
	}
	d.h.onPair(same) // the same 5-tuple: nothing happens
	if _, err := d.Write([]byte("still here")); err != nil {
		t.Fatalf("write on the same path: %v", err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "still here" {
		t.Fatalf("peer read %q %v", got, err)
	}
	moved := *same
	remote := *same.Remote
	remote.Port++
	moved.Remote = &remote
	d.h.onPair(&moved)
	<-d.closed
	_, rerr := d.Read(make([]byte, 1))
	_, werr := d.Write([]byte("x"))
	for _, err := range []error{rerr, werr} {
		if !errors.Is(err, ErrPathChanged) {
			t.Errorf("after the path changed: %v, want ErrPathChanged", err)
		}
	}
	if _, err := a.Read(got); err == nil {
		t.Error("the peer's end should fail too")
	}
}

// The last bytes written before Close arrive (QUIC discards undelivered
// data when a connection closes).
func TestQUICCloseDeliversTheTail(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer a.Close()
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	got := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(a)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b
	}()
	if _, err := d.Write(payload); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("got %d bytes of %d, or different ones", len(b), len(payload))
	}
}

// Dial's helper goroutines end when Dial returns, even when its ctx never
// does (issue 14, item 8: they waited on the caller's ctx, forever for
// context.Background()).
func TestDialLeavesNoGoroutines(t *testing.T) {
	p := newPair(t)
	ignore := goleak.IgnoreCurrent()
	if _, err := p.a.Dial(context.Background(), "zzzzzzzzzzzzzzzz"); !errors.Is(err, ErrPeerOffline) {
		t.Fatalf("dial offline: %v", err)
	}
	if err := goleak.Find(ignore, goleak.IgnoreTopFunction("github.com/pion/transport/v2/deadline.(*Deadline).timer"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).taskLoop"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).startOnConnectionStateChangeRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/pion/ice/v2.(*Agent).startOnConnectionStateChangeRoutine.func2"),
		goleak.IgnoreAnyFunction("github.com/pion/webrtc/v3.(*operations).start"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	); err != nil {
		t.Fatal(err)
	}
}

func TestQUICOfferRoundTrip(t *testing.T) {
	fp := bytes.Repeat([]byte{0xab}, 32)
	sdp := "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
	out := withQUICOffer(sdp, fp)
	if got := parseQUICOffer(out); !bytes.Equal(got, fp) {
		t.Fatalf("parsed %x from\n%s", got, out)
	}
	if !strings.Contains(out, "a=kin-quic:sha-256 "+strings.Repeat("ab", 32)+"\r\nm=application") {
		t.Errorf("attribute not at session level:\n%s", out)
	}
	for _, bad := range []string{
		sdp,
		"m=application 9\r\na=kin-quic:sha-256 " + strings.Repeat("ab", 32) + "\r\n", // media level
		"a=kin-quic:sha-1 " + strings.Repeat("ab", 20) + "\r\n",
		"a=kin-quic:sha-256 " + strings.Repeat("zz", 32) + "\r\n",
		"a=kin-quic:sha-256 abcd\r\n",
	} {
		if got := parseQUICOffer(bad); got != nil {
			t.Errorf("parsed %x from %q", got, bad)
		}
	}
	// pion accepts the SDP with the attribute.
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.CreateDataChannel("x", nil); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	pc2, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	if err := pc2.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: withQUICOffer(offer.SDP, fp)}); err != nil {
		t.Fatalf("pion refused the SDP with the QUIC offer: %v", err)
	}
}

func FuzzParseQUICOffer(f *testing.F) {
	f.Add("v=0\r\na=kin-quic:sha-256 " + strings.Repeat("01", 32) + "\r\nm=application 9\r\n")
	f.Add("a=kin-quic:\r\n")
	f.Add("a=kin-quic:sha-256 \n")
	f.Add("")
	f.Fuzz(func(t *testing.T, sdp string) {
		fp := parseQUICOffer(sdp)
		if fp != nil && len(fp) != sha256.Size {
			t.Fatalf("fingerprint of %d bytes", len(fp))
		}
		if fp != nil {
			if again := parseQUICOffer(withQUICOffer("", fp)); !bytes.Equal(again, fp) {
				t.Fatal("round trip")
			}
		}
	})
}

// Server-reflexive candidates live on sockets of their own (pion v3 opens
// one per STUN server): QUIC must dial from the socket behind the selected
// local candidate, the srflx candidate's base (its related port), not the
// host candidate's. A relayed local candidate has no socket of ours.
func TestQUICSocketBehindCandidate(t *testing.T) {
	qn := newQUICNet(newBufferedNet(slog.New(slog.DiscardHandler)), nil)
	defer qn.close()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	hostSock, err := qn.ListenUDP("udp4", lo)
	if err != nil {
		t.Fatal(err)
	}
	srflxSock, err := qn.ListenUDP("udp4", lo)
	if err != nil {
		t.Fatal(err)
	}
	hostPort := hostSock.LocalAddr().(*net.UDPAddr).Port
	srflxBase := srflxSock.LocalAddr().(*net.UDPAddr).Port
	remote := &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeSrflx, Address: "203.0.113.7", Port: 4000}
	pair := func(local webrtc.ICECandidate) *webrtc.ICECandidatePair {
		return &webrtc.ICECandidatePair{Local: &local, Remote: remote}
	}
	host := webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeHost, Address: "127.0.0.1", Port: uint16(hostPort)}
	srflx := webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeSrflx, Address: "198.51.100.1", Port: 61000,
		RelatedAddress: "127.0.0.1", RelatedPort: uint16(srflxBase)}
	relay := webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeRelay, Address: "203.0.113.1", Port: 50000,
		RelatedAddress: "127.0.0.1", RelatedPort: uint16(hostPort)}

	for _, c := range []struct {
		local webrtc.ICECandidate
		sock  any
	}{{host, hostSock}, {srflx, srflxSock}} {
		tr, to, err := qn.transportFor(pair(c.local))
		if err != nil {
			t.Fatalf("%s: %v", c.local.Typ, err)
		}
		if tr != c.sock.(*pionUDP).tr {
			t.Errorf("%s candidate: QUIC would dial from the wrong socket", c.local.Typ)
		}
		if to.String() != "203.0.113.7:4000" {
			t.Errorf("%s candidate: QUIC would dial %s", c.local.Typ, to)
		}
	}
	if _, _, err := qn.transportFor(pair(relay)); !errors.Is(err, errRelayedPair) {
		t.Errorf("relayed local candidate: %v", err)
	}
}

// The QUIC certificates are pinned by the fingerprints in the SDP, both
// ways: a peer whose certificate does not match gets no QUIC connection,
// and the connection falls back to the data channel. So does one whose
// QUIC handshake never answers (after quicHandshakeTimeout).
func TestQUICPinsCertificatesAndFallsBack(t *testing.T) {
	wrong := bytes.Repeat([]byte{7}, 32)
	for _, c := range []struct {
		name  string
		setup func(p *pairEnv)
	}{
		{"acceptor's certificate not the signalled one", func(p *pairEnv) { p.b.testFP = wrong }},
		{"dialer's certificate not the signalled one", func(p *pairEnv) { p.a.testFP = wrong }},
		{"acceptor offers QUIC but never answers it", func(p *pairEnv) { p.b.testNoListen = true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t)
			c.setup(p)
			d, a := p.connect(t)
			defer d.Close()
			defer a.Close()
			wantLane(t, "direct, data channel", d, a)
			transfer(t, d, a, 1<<20)
		})
	}
}
