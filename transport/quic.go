package transport

// The fast lane: QUIC on the UDP 5-tuple ICE selected, beside DTLS.
//
// Why this shape (measured in ../shared/research/quic-on-ice, loopback,
// 1 GiB, median of 3, 2 cores):
//
//   - quic-go owns every UDP socket pion opens for host and server-reflexive
//     candidates (a transport.Net given to SettingEngine.SetNet, "design C"):
//     a QUIC stream there moved 476 MB/s at 4.7 CPU s/GB. Letting pion own
//     the socket and diverting QUIC packets to quic-go through a plain
//     net.PacketConn ("design A") cost QUIC ~30% (339 MB/s, 6.5 CPU s/GB:
//     no GSO, no recvmmsg batches). Sharing one socket through a UDPMux
//     ("design B") was as fast as C but breaks server-reflexive candidates:
//     pion v3 opens those on separate sockets anyway, so QUIC must dial from
//     the socket behind the selected local candidate (srflx: its related
//     port, the base), which is what the per-socket ownership here gives.
//   - The price: quic-go queues at most 32 non-QUIC packets for pion on a
//     socket it owns and drops the rest, so a data channel on such a socket
//     runs at about half speed (44 vs 85 MB/s): fine for control and for the
//     fallback, which is why a node told to use the data channel
//     (KIN_LANE=datachannel), or answering a peer that does not offer QUIC,
//     opens plain sockets instead. TURN sockets are never wrapped (pion opens
//     them with ListenPacket), and pion drops QUIC-range bytes arriving on a
//     relayed pair, so relayed pairs always keep the data channel.
//
// Packets are told apart by their first byte (RFC 9443: STUN 0-3, DTLS
// 20-63, QUIC has 0x40 set); quic-go's Transport does that split.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/webrtc/v3"
	"github.com/quic-go/quic-go"
)

const quicBufferWarning = "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"

// Lanes a Conn can carry its bytes on.
const (
	LaneQUIC        = "QUIC"
	LaneDataChannel = "data channel"
)

// Lane settings (Config.Lane, KIN_LANE).
const (
	LaneAuto         = ""            // QUIC when both peers offer it and the pair is direct
	LaneForceDC      = "datachannel" // never offer QUIC: every connection uses the data channel
	quicALPN         = "kin"
	sdpQUICAttribute = "a=kin-quic:"
	// quicHandshakeTimeout bounds the QUIC handshake on the selected pair
	// before the dialer settles for the data channel: a few lost Initials'
	// worth of retransmissions on a slow link, well inside handshakeTimeout.
	quicHandshakeTimeout = 3 * time.Second
	// quicCloseWait bounds how long Close waits for the peer to take the
	// last bytes (see Conn.Close).
	quicCloseWait = 3 * time.Second
)

// The first bytes each lane carries when both peers offer QUIC, so that
// both ends pick the same lane. On the QUIC stream the dialer sends
// quicHello, the acceptor answers quicAck, and the dialer commits with
// quicCommit: in TLS 1.3 the client's handshake is complete before the
// server has checked the client's certificate, so only the answer tells
// the dialer the acceptor took the connection, and only the commitment
// tells the acceptor the dialer did not give up meanwhile. When the dialer
// settles for the data channel (relayed pair, QUIC failed or too slow) it
// sends dcLaneShift as the channel's first message instead. The acceptor
// takes whichever commitment arrives.
var (
	quicHello   = []byte{'h'}
	quicAck     = []byte{'a'}
	quicCommit  = []byte{'c'}
	dcLaneShift = []byte("kin-lane:datachannel")
)

// ErrPathChanged is returned by a QUIC-lane Conn's Read and Write after ICE
// moved the connection to another candidate pair: QUIC cannot follow a
// change of the peer's address, so the connection ends rather than stall.
var ErrPathChanged = errors.New("the network path changed (ICE selected another candidate pair) and the QUIC connection cannot follow it")

// quicIdentity is this node's QUIC certificate: self-signed, pinned by the
// peer through the SHA-256 fingerprint carried in the SDP, as DTLS's is.
type quicIdentity struct {
	cert tls.Certificate
	fp   []byte // SHA-256 of the DER certificate
}

func newQUICIdentity() (*quicIdentity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), DNSNames: []string{"kin"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &quicIdentity{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, fp: sum[:]}, nil
}

// pin accepts only the certificate whose SHA-256 is fp.
func pin(fp []byte) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer sent no QUIC certificate")
		}
		sum := sha256.Sum256(raw[0])
		if !bytes.Equal(sum[:], fp) {
			return errors.New("the peer's QUIC certificate does not match the fingerprint it signalled")
		}
		return nil
	}
}

func (q *quicIdentity) serverTLS(peerFP []byte) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{q.cert}, NextProtos: []string{quicALPN, laneALPN},
		MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: pin(peerFP)}
}

func (q *quicIdentity) clientTLS(peerFP []byte) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{q.cert}, NextProtos: []string{quicALPN},
		MinVersion: tls.VersionTLS13, ServerName: "kin",
		InsecureSkipVerify:    true, // the certificate is self-signed: pin checks it instead
		VerifyPeerCertificate: pin(peerFP)}
}

// maxStreams bounds the streams a peer may have open at once on one QUIC
// connection: SSH's and one per forwarded TCP connection (streams.go).
const maxStreams = 1024

// quicConfig: windows large enough for a fast LAN; idle timeout and
// keep-alives in step with ICE's (a silent peer is gone after
// peerSilence; keep-alive every second).
//
// The windows start small and auto-tune: starting them at the maximum
// changed nothing on loopback (BenchmarkSSHOverConn quic/raw, A/B
// interleaved on a quiet 2-core host: 566-617 MB/s as is, 591-604 at the
// maximum). The lane is CPU-bound there (~1.75 of 2 cores, ~2.9 CPU s/GB,
// all of it in quic-go, syscalls and AES-GCM); its slow runs (~1 core,
// 270-390 MB/s) are runs during which the rest of the host took a core.
func quicConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: peerSilence, KeepAlivePeriod: time.Second,
		HandshakeIdleTimeout:   quicHandshakeTimeout,
		MaxStreamReceiveWindow: 16 << 20, MaxConnectionReceiveWindow: 24 << 20,
		// Each forwarded connection is a new stream (streams.go): ones
		// that started at quic-go's 512 KiB moved 64 MB/s on 1 Gbit/s,
		// 10 ms, in one bench run; from 4 MiB, 86-101 in five, as SSH's
		// stream did (86-111: that link is noisy).
		InitialStreamReceiveWindow: 4 << 20, InitialConnectionReceiveWindow: 8 << 20,
		MaxIncomingStreams: maxStreams}
}

// withQUICOffer adds the QUIC offer (fingerprint of our certificate) to an
// SDP as a session-level attribute, before the first media section. Peers
// that do not know it ignore it.
func withQUICOffer(sdp string, fp []byte) string {
	line := sdpQUICAttribute + "sha-256 " + hex.EncodeToString(fp) + "\r\n"
	if i := strings.Index(sdp, "\r\nm="); i >= 0 {
		return sdp[:i+2] + line + sdp[i+2:]
	}
	if strings.HasSuffix(sdp, "\r\n") || sdp == "" {
		return sdp + line
	}
	return sdp + "\r\n" + line
}

// parseQUICOffer returns the peer's QUIC certificate fingerprint from its
// SDP, or nil if it does not offer QUIC (or offers it in a form we do not
// know: that peer gets the data channel).
func parseQUICOffer(sdp string) []byte {
	for line := range strings.Lines(sdp) {
		if i := strings.Index(line, "m="); i == 0 {
			return nil // session-level attributes only
		}
		v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), sdpQUICAttribute)
		if !ok {
			continue
		}
		alg, hx, ok := strings.Cut(v, " ")
		if !ok || alg != "sha-256" || len(hx) != 2*sha256.Size {
			return nil
		}
		fp, err := hex.DecodeString(hx)
		if err != nil {
			return nil
		}
		return fp
	}
	return nil
}

// quicNet is the transport.Net of one PeerConnection that offers QUIC:
// every UDP socket ICE opens belongs to a quic.Transport, and pion sees
// only the non-QUIC packets on it.
type quicNet struct {
	*bufferedNet
	serverTLS *tls.Config     // acceptor: listen for the dialer's QUIC on every socket
	accepted  chan *quic.Conn // acceptor: QUIC connections that finished their handshake
	lanes     chan *laneConn  // extra lanes the peer opened (see lanes.go)

	mu     sync.Mutex
	byPort map[int]*pionUDP
	closed bool
}

func newQUICNet(base *bufferedNet, serverTLS *tls.Config) *quicNet {
	// bufferedNet sizes the sockets and warns through kin's log when the OS
	// keeps them small; quic-go would print its own warning to stderr.
	if os.Getenv(quicBufferWarning) == "" {
		os.Setenv(quicBufferWarning, "true")
	}
	return &quicNet{bufferedNet: base, serverTLS: serverTLS, accepted: make(chan *quic.Conn, 1), lanes: make(chan *laneConn, maxPendingLanes), byPort: map[int]*pionUDP{}}
}

// ListenUDP opens a socket for a host or server-reflexive candidate.
func (n *quicNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return c, err
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return c, nil
	}
	n.size(uc)
	tr := &quic.Transport{Conn: uc}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pionUDP{tr: tr, uc: uc, ctx: ctx, cancel: cancel}
	// quic-go drops the non-QUIC packets that arrive before the first
	// ReadNonQUICPacket, and pion starts reading a candidate's socket only
	// once its ICE agent runs: the peer's first connectivity check (or its
	// answer to ours) could be lost, and ICE would retry only at its next
	// check round, 200 ms later. A read that returns at once makes the
	// transport queue them from now on.
	done, stop := context.WithCancel(ctx)
	stop()
	tr.ReadNonQUICPacket(done, nil)
	if n.serverTLS != nil {
		ln, err := tr.Listen(n.serverTLS, quicConfig())
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("quic listen: %w", err)
		}
		go n.acceptLoop(ln)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed { // the connection is over; pion is still gathering
		p.Close()
		return nil, net.ErrClosed
	}
	n.byPort[uc.LocalAddr().(*net.UDPAddr).Port] = p
	return p, nil
}

func (n *quicNet) acceptLoop(ln *quic.Listener) {
	for {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return // the transport closed
		}
		if qc.ConnectionState().TLS.NegotiatedProtocol == laneALPN {
			go n.takeLane(qc)
			continue
		}
		select {
		case n.accepted <- qc:
		default: // one QUIC connection per peer connection
			qc.CloseWithError(quicCodeRefused, "one QUIC connection per peer connection")
		}
	}
}

// close closes every socket still open (pion closes them with the
// PeerConnection; this catches the ones opened while it was closing) and
// any QUIC connection accepted but never used.
func (n *quicNet) close() {
	n.mu.Lock()
	n.closed = true
	socks := make([]*pionUDP, 0, len(n.byPort))
	for _, p := range n.byPort {
		socks = append(socks, p)
	}
	n.mu.Unlock()
	for _, p := range socks {
		p.Close()
	}
	select {
	case qc := <-n.accepted:
		qc.CloseWithError(quicCodeRefused, "")
	default:
	}
	for {
		select {
		case l := <-n.lanes:
			l.qc.CloseWithError(quicCodeRefused, "")
		default:
			return
		}
	}
}

// QUIC application error codes.
const (
	quicCodeClosed      quic.ApplicationErrorCode = 0
	quicCodeRefused     quic.ApplicationErrorCode = 1
	quicCodePathChanged quic.ApplicationErrorCode = 2
)

// errRelayedPair means the selected pair has no socket of ours at both
// ends that QUIC could use.
var errRelayedPair = errors.New("the selected candidate pair is relayed: QUIC cannot use it")

// socketPort is the local port of the socket behind a local candidate: a
// host candidate's own, a server-reflexive candidate's base (its related
// port). Relayed candidates have none of ours.
func socketPort(c webrtc.ICECandidate) (int, bool) {
	switch c.Typ {
	case webrtc.ICECandidateTypeHost:
		return int(c.Port), true
	case webrtc.ICECandidateTypeSrflx, webrtc.ICECandidateTypePrflx:
		return int(c.RelatedPort), true
	}
	return 0, false
}

// transportFor returns the QUIC transport behind the pair's local
// candidate and the remote address QUIC must send to.
func (n *quicNet) transportFor(pair *webrtc.ICECandidatePair) (*quic.Transport, *net.UDPAddr, error) {
	port, ok := socketPort(*pair.Local)
	if !ok {
		return nil, nil, errRelayedPair
	}
	n.mu.Lock()
	p := n.byPort[port]
	n.mu.Unlock()
	if p == nil {
		return nil, nil, fmt.Errorf("no socket of ours on port %d for the selected candidate %s", port, pair.Local)
	}
	ip := net.ParseIP(pair.Remote.Address)
	if ip == nil {
		return nil, nil, fmt.Errorf("the selected remote candidate has no IP address: %q", pair.Remote.Address)
	}
	return p.tr, &net.UDPAddr{IP: ip, Port: int(pair.Remote.Port)}, nil
}

// pionUDP is pion's view of a socket owned by a quic.Transport: it reads
// the non-QUIC packets and writes through the transport.
type pionUDP struct {
	tr     *quic.Transport
	uc     *net.UDPConn
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	dmu      sync.Mutex
	deadline time.Time
}

func (p *pionUDP) ReadFrom(b []byte) (int, net.Addr, error) {
	p.dmu.Lock()
	d := p.deadline
	p.dmu.Unlock()
	ctx := p.ctx
	if !d.IsZero() { // pion's STUN gathering times out by read deadline
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(p.ctx, d)
		defer cancel()
	}
	n, a, err := p.tr.ReadNonQUICPacket(ctx, b)
	switch {
	case err == nil:
		return n, a, nil
	case p.ctx.Err() != nil:
		return 0, nil, net.ErrClosed // pion takes this as a normal close
	case errors.Is(err, context.DeadlineExceeded):
		return 0, nil, timeoutError{}
	}
	return n, a, err
}

func (p *pionUDP) WriteTo(b []byte, a net.Addr) (int, error) { return p.tr.WriteTo(b, a) }

func (p *pionUDP) Close() error {
	p.once.Do(func() {
		p.cancel()
		p.tr.Close() // ends any QUIC connection on this socket too
		p.uc.Close()
	})
	return nil
}

func (p *pionUDP) SetReadDeadline(t time.Time) error {
	p.dmu.Lock()
	p.deadline = t
	p.dmu.Unlock()
	return nil
}
func (p *pionUDP) SetDeadline(t time.Time) error    { return p.SetReadDeadline(t) }
func (p *pionUDP) SetWriteDeadline(time.Time) error { return nil }
func (p *pionUDP) LocalAddr() net.Addr              { return p.uc.LocalAddr() }
func (p *pionUDP) RemoteAddr() net.Addr             { return nil }
func (p *pionUDP) SetReadBuffer(n int) error        { return p.uc.SetReadBuffer(n) }
func (p *pionUDP) SetWriteBuffer(n int) error       { return p.uc.SetWriteBuffer(n) }
func (p *pionUDP) Read(b []byte) (int, error)       { n, _, err := p.ReadFrom(b); return n, err }
func (p *pionUDP) Write([]byte) (int, error)        { return 0, errors.New("unconnected socket: use WriteTo") }
func (p *pionUDP) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	n, a, err := p.ReadFrom(b)
	ua, _ := a.(*net.UDPAddr)
	return n, ua, err
}
func (p *pionUDP) ReadMsgUDP(b, _ []byte) (int, int, int, *net.UDPAddr, error) {
	n, a, err := p.ReadFromUDP(b)
	return n, 0, 0, a, err
}
func (p *pionUDP) WriteToUDP(b []byte, a *net.UDPAddr) (int, error) { return p.WriteTo(b, a) }
func (p *pionUDP) WriteMsgUDP(b, _ []byte, a *net.UDPAddr) (int, int, error) {
	n, err := p.WriteTo(b, a)
	return n, 0, err
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ transport.UDPConn = (*pionUDP)(nil)
var _ transport.Net = (*quicNet)(nil)
