// Package transport turns a signaling channel into peer-to-peer net.Conns:
// one WebRTC PeerConnection per connection, ICE to get through NATs, and
// the bytes on the fastest lane the path allows: a QUIC stream on the UDP
// 5-tuple ICE selected when both peers offer it and the pair is direct
// (quic.go), otherwise one ordered, reliable, detached data channel.
package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/ice/v2"
	"github.com/pion/stun"
	"github.com/pion/transport/v2"
	"github.com/pion/webrtc/v3"
	"github.com/quic-go/quic-go"

	"kin/keys"
	"kin/signal"
)

// Signaler is what transport needs from signaling; *signal.Client is one.
type Signaler interface {
	Send(ctx context.Context, m signal.Message) error
	Recv(ctx context.Context) (signal.Message, error)
}

// Config says how a node connects.
type Config struct {
	// ICEServers returns the STUN/TURN servers to use now: those of the
	// current signaling registration (TURN credentials expire, and change
	// on re-registration). nil means none; kin has no built-in ones.
	ICEServers func() []signal.ICEServer
	// Interfaces limits ICE to these network interfaces (e.g. "lo" for two
	// peers on one machine); empty means all.
	Interfaces []string
	// Lane is LaneAuto (QUIC where it can run, else the data channel) or
	// LaneForceDC (never offer QUIC). Empty takes KIN_LANE from the
	// environment.
	Lane   string
	Logger *slog.Logger
}

// ErrPeerOffline is returned by Dial when the signaling server says the
// peer is not registered.
var ErrPeerOffline = errors.New("peer is not online")

// ErrNoRoute is returned by Dial and Accept when ICE found no path between
// the two peers (firewalls, NATs that cannot be traversed, no relay).
var ErrNoRoute = errors.New("no route to the peer")

const (
	handshakeTimeout = 20 * time.Second
	maxHandshakes    = 16 // incoming handshakes in flight
)

// Node is this peer on the signaling channel: it dials others and accepts
// their connections.
type Node struct {
	sig  Signaler
	cfg  Config
	api  *webrtc.API   // for connections without QUIC: plain sockets
	base *bufferedNet  // the sockets' settings
	quic *quicIdentity // nil: this node does not offer QUIC
	log  *slog.Logger
	// skipQUICDial (tests) makes the dialer settle for the data channel
	// although both ends offer QUIC, as when the QUIC handshake fails.
	skipQUICDial bool
	// Tests: advertise this fingerprint instead of our certificate's; do
	// not listen for QUIC although we offer it.
	testFP       []byte
	testNoListen bool
	run          *running // set by Start

	mu       sync.Mutex
	sessions map[string]*handshake
	accepted chan *Conn
	slots    chan struct{}
	ctx      context.Context // Run's; nil until Run starts
	started  chan struct{}
	wg       sync.WaitGroup
}

// NewNode makes a node; Run must run for it to work.
func NewNode(sig Signaler, cfg Config) *Node {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Lane == "" {
		cfg.Lane = os.Getenv("KIN_LANE")
	}
	base := newBufferedNet(cfg.Logger)
	var plain transport.Net
	if base != nil {
		plain = base
	}
	var qid *quicIdentity
	switch cfg.Lane {
	case LaneForceDC:
	case LaneAuto, "auto", "quic":
		if base != nil {
			var err error
			if qid, err = newQUICIdentity(); err != nil {
				cfg.Logger.Warn("no QUIC certificate: connections use the data channel", "err", err)
			}
		}
	default:
		cfg.Logger.Warn("unknown lane setting; using QUIC where possible", "lane", cfg.Lane, "known", "datachannel")
		if base != nil {
			qid, _ = newQUICIdentity()
		}
	}
	return &Node{
		sig:      sig,
		cfg:      cfg,
		api:      newAPI(cfg, plain),
		base:     base,
		quic:     qid,
		log:      cfg.Logger,
		sessions: map[string]*handshake{},
		accepted: make(chan *Conn),
		slots:    make(chan struct{}, maxHandshakes),
		started:  make(chan struct{}),
	}
}

// stopping reports whether the context Run was given has ended.
func (n *Node) stopping() bool {
	n.mu.Lock()
	ctx := n.ctx
	n.mu.Unlock()
	return ctx != nil && ctx.Err() != nil
}

// Run dispatches signaling messages until ctx is done or Recv fails; then
// it closes every connection the node made.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	n.ctx = ctx
	n.mu.Unlock()
	close(n.started)
	defer n.wg.Wait()
	for {
		m, err := n.sig.Recv(ctx)
		if err != nil {
			return err
		}
		n.dispatch(ctx, m)
	}
}

func (n *Node) dispatch(ctx context.Context, m signal.Message) {
	n.mu.Lock()
	h := n.sessions[m.Session]
	n.mu.Unlock()
	if h != nil {
		if m.Type == signal.TypeError || m.From == h.peer {
			h.deliver(m)
		}
		return
	}
	if m.Type != signal.TypeOffer {
		return // late candidates of a finished handshake, or noise
	}
	select {
	case n.slots <- struct{}{}:
	default:
		n.log.Warn("too many incoming connections at once; ignoring offer", "from", m.From)
		return
	}
	h = n.newHandshake(m.Session, m.From, false)
	if h == nil {
		<-n.slots
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-n.slots }()
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		conn, err := h.answer(hctx, m)
		if err != nil {
			n.log.Debug("incoming connection failed", "from", m.From, "err", err)
			return
		}
		select {
		case n.accepted <- conn:
		case <-ctx.Done():
			conn.Close()
		case <-time.After(handshakeTimeout):
			n.log.Warn("nobody accepted an incoming connection", "from", m.From)
			conn.Close()
		}
	}()
}

// Accept returns the next incoming connection. Who is on the other end is
// not authenticated here: SSH does that above. For a node made by Start,
// it fails with net.ErrClosed once the node has stopped (Err says why).
func (n *Node) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-n.accepted:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.Done(): // nil, never ready, for a node not made by Start
		return nil, fmt.Errorf("accept: node stopped: %w", net.ErrClosed)
	}
}

// Dial connects to peer.
func (n *Node) Dial(ctx context.Context, peer keys.PeerID) (*Conn, error) {
	return n.DialInstance(ctx, peer, "")
}

// DialInstance connects to one registration of peer: the instance named
// in a ticket ("" = whichever takes offers; see signal.ModeListen).
func (n *Node) DialInstance(ctx context.Context, peer keys.PeerID, instance string) (*Conn, error) {
	select {
	case <-n.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	id := make([]byte, 12)
	rand.Read(id)
	h := n.newHandshake(hex.EncodeToString(id), peer, true)
	if h == nil {
		return nil, errors.New("transport node is not running")
	}
	h.instance = instance
	return h.offer(ctx)
}

func (n *Node) advertisedFP() []byte {
	if n.testFP != nil {
		return n.testFP
	}
	return n.quic.fp
}

func (n *Node) newHandshake(session string, peer keys.PeerID, dialer bool) *handshake {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx == nil || n.ctx.Err() != nil {
		return nil
	}
	h := &handshake{node: n, session: session, peer: peer, dialer: dialer,
		inbox: make(chan signal.Message, 128), start: time.Now(), pairUp: make(chan struct{}),
		hostUp: make(chan struct{}),
		log:    n.log.With("peer", peer, "session", session)}
	n.sessions[session] = h
	return h
}

func (n *Node) forget(session string) {
	n.mu.Lock()
	delete(n.sessions, session)
	n.mu.Unlock()
}

// handshake is one connection being set up, and then its signaling side.
type handshake struct {
	node     *Node
	session  string
	peer     keys.PeerID
	instance string // the peer's registration an offer is for
	dialer   bool
	inbox    chan signal.Message
	start    time.Time
	log      *slog.Logger

	mu         sync.Mutex
	timings    Timings
	localKinds map[string]bool
	remoteKind map[string]bool
	knownIPs   map[string]webrtc.ICECandidateType // remote candidates' and TURN relays' addresses
	conn       *Conn
	offered    bool             // the dialer's offer went out: candidates may follow
	early      []signal.Message // the dialer's candidates gathered before that

	qn       *quicNet // nil: this connection does not offer QUIC
	peerFP   []byte   // the peer's QUIC certificate fingerprint; nil: it does not offer QUIC
	pairUp   chan struct{}
	pairOnce sync.Once
	hostUp   chan struct{} // closed at the first host candidate (or the end of gathering)
	hostOnce sync.Once
}

// useQUIC says whether both ends offered QUIC (known to the dialer once
// the answer is in).
func (h *handshake) useQUIC() bool { return h.qn != nil && h.peerFP != nil }

// onPair runs when ICE selects a candidate pair: the first one starts the
// QUIC handshake; a later change is checked against the QUIC path.
func (h *handshake) onPair(p *webrtc.ICECandidatePair) {
	if p == nil {
		return
	}
	h.pairOnce.Do(func() { close(h.pairUp) })
	h.mu.Lock()
	c := h.conn
	h.mu.Unlock()
	if c != nil {
		c.pathChanged(p)
	}
}

func (h *handshake) deliver(m signal.Message) {
	if m.Type == signal.TypeBye {
		h.mu.Lock()
		c := h.conn
		h.mu.Unlock()
		if c != nil {
			go c.closeFromPeer()
			return
		}
	}
	select {
	case h.inbox <- m:
	default:
		h.log.Warn("dropping signaling message for a busy handshake", "type", m.Type)
	}
}

func (h *handshake) send(ctx context.Context, m signal.Message) error {
	m.To, m.Session = h.peer, h.session
	return h.node.sig.Send(ctx, m)
}

func (h *handshake) mark(d *time.Duration) {
	h.mu.Lock()
	if *d == 0 {
		*d = time.Since(h.start)
	}
	h.mu.Unlock()
}

// newPeerConnection makes the PeerConnection and wires candidates, state
// timings and the selected pair; with h.qn set its sockets belong to QUIC.
func (h *handshake) newPeerConnection(ctx context.Context) (*webrtc.PeerConnection, error) {
	servers := h.node.iceServers()
	api := h.node.api
	if h.qn != nil {
		api = newAPI(h.node.cfg, h.qn)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(h.onPair)
	h.localKinds, h.remoteKind, h.knownIPs = map[string]bool{}, map[string]bool{}, map[string]webrtc.ICECandidateType{}
	for _, ip := range relayHosts(ctx, servers) {
		h.knownIPs[ip] = webrtc.ICECandidateTypeRelay
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil || c.Typ == webrtc.ICECandidateTypeHost {
			h.hostOnce.Do(func() { close(h.hostUp) })
		}
		m := signal.Message{Type: signal.TypeCandidate}
		if c != nil {
			h.mu.Lock()
			h.localKinds[c.Typ.String()] = true
			if c.Typ == webrtc.ICECandidateTypeRelay {
				h.knownIPs[c.Address] = webrtc.ICECandidateTypeRelay
			}
			h.mu.Unlock()
			b, _ := json.Marshal(c.ToJSON())
			m.Candidate = string(b)
		}
		h.mu.Lock()
		if h.dialer && !h.offered {
			// Not before the offer: the peer has no handshake yet for a
			// candidate that overtakes it, and drops it.
			h.early = append(h.early, m)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		h.sendCandidate(m)
	})
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		h.log.Debug("ICE state", "state", s)
		switch s {
		case webrtc.ICEConnectionStateConnected:
			h.mark(&h.timings.ICE)
		case webrtc.ICEConnectionStateDisconnected:
			h.mu.Lock()
			c := h.conn
			h.mu.Unlock()
			if c != nil {
				c.iceDisconnected()
			}
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			h.mark(&h.timings.DTLS)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			h.mu.Lock()
			c := h.conn
			h.mu.Unlock()
			switch {
			case c == nil:
			case s == webrtc.PeerConnectionStateFailed:
				c.lose()
			default:
				go c.closeFromPeer()
			}
		}
	})
	return pc, nil
}

func (h *handshake) sendCandidate(m signal.Message) {
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.send(sctx, m); err != nil {
		h.log.Debug("could not send candidate", "err", err)
	}
}

// sentOffer sends the candidates gathered while the offer was on its way.
func (h *handshake) sentOffer() {
	h.mu.Lock()
	h.offered = true
	early := h.early
	h.early = nil
	h.mu.Unlock()
	for _, m := range early {
		h.sendCandidate(m)
	}
}

// abandon tears down a handshake that failed and tells the peer.
func (h *handshake) abandon(pc *webrtc.PeerConnection) {
	if pc != nil {
		pc.Close()
	}
	if h.qn != nil {
		h.qn.close()
	}
	h.node.forget(h.session)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.send(ctx, signal.Message{Type: signal.TypeBye})
}

// offer runs the dialing side.
func (h *handshake) offer(ctx context.Context) (_ *Conn, err error) {
	var pc *webrtc.PeerConnection
	defer func() {
		if err != nil {
			h.abandon(pc)
		}
	}()
	if h.node.quic != nil {
		h.qn = newQUICNet(h.node.base, nil)
	}
	if pc, err = h.newPeerConnection(ctx); err != nil {
		return nil, err
	}
	dc, err := pc.CreateDataChannel("kin", nil) // ordered, reliable
	if err != nil {
		return nil, fmt.Errorf("create data channel: %w", err)
	}
	opened := make(chan struct{})
	dc.OnOpen(func() { close(opened) })
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err == nil {
		sdp := offer.SDP
		if h.qn != nil {
			sdp = withQUICOffer(sdp, h.node.advertisedFP())
		}
		err = h.send(ctx, signal.Message{Type: signal.TypeOffer, SDP: sdp, Instance: h.instance})
	}
	if err != nil {
		return nil, fmt.Errorf("send offer: %w", err)
	}
	h.sentOffer()
	return h.negotiate(ctx, pc, func(ctx context.Context) (*webrtc.DataChannel, error) {
		select {
		case <-opened:
			return dc, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// answer runs the accepting side for an offer.
func (h *handshake) answer(ctx context.Context, offer signal.Message) (_ *Conn, err error) {
	var pc *webrtc.PeerConnection
	defer func() {
		if err != nil {
			h.abandon(pc)
		}
	}()
	if fp := parseQUICOffer(offer.SDP); fp != nil && h.node.quic != nil {
		h.peerFP = fp
		var stls *tls.Config
		if !h.node.testNoListen {
			stls = h.node.quic.serverTLS(fp)
		}
		h.qn = newQUICNet(h.node.base, stls)
	}
	if pc, err = h.newPeerConnection(ctx); err != nil {
		return nil, err
	}
	channels := make(chan *webrtc.DataChannel, 1)
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() {
			select {
			case channels <- dc:
			default: // a peer opening more than one channel gets only the first
			}
		})
	})
	err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer.SDP})
	var answer webrtc.SessionDescription
	if err == nil {
		answer, err = pc.CreateAnswer(nil)
	}
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err == nil {
		sdp := h.answerWithHosts(ctx, pc, answer.SDP)
		if h.qn != nil {
			sdp = withQUICOffer(sdp, h.node.advertisedFP())
		}
		err = h.send(ctx, signal.Message{Type: signal.TypeAnswer, SDP: sdp})
	}
	if err != nil {
		return nil, fmt.Errorf("answer offer: %w", err)
	}
	h.mark(&h.timings.Signaling)
	return h.negotiate(ctx, pc, func(ctx context.Context) (*webrtc.DataChannel, error) {
		select {
		case dc := <-channels:
			return dc, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// answerHostWait bounds how long the acceptor holds its answer for its
// first host candidate.
const answerHostWait = 50 * time.Millisecond

// answerWithHosts returns the answer to send: with the host candidates
// gathered so far in it (the first one waited for, briefly), not only
// trickled after it. ICE's checks start as soon as the acceptor has the
// answer and the offerer's candidates: when a check reaches the offerer
// before the candidate it comes from, pion takes its address for a new
// peer-reflexive candidate, the host candidate that follows makes a second
// pair for the same path that never succeeds, and the offerer nominates
// only at its next check round, 200 ms later (connect to first byte on
// loopback: ~20 ms, or ~220 ms when the check won the race). A candidate
// in the answer is known to the offerer before it accepts any check.
func (h *handshake) answerWithHosts(ctx context.Context, pc *webrtc.PeerConnection, sdp string) string {
	t := time.NewTimer(answerHostWait)
	defer t.Stop()
	select {
	case <-h.hostUp:
	case <-t.C:
	case <-ctx.Done():
	}
	if d := pc.LocalDescription(); d != nil {
		return d.SDP
	}
	return sdp
}

// negotiate processes signaling for the handshake until a lane is ready,
// then wraps it as a Conn. open returns the open data channel; it runs
// until it does or its ctx (which ends with negotiate) is done.
//
// When both ends offered QUIC, the dialer starts the QUIC handshake as soon
// as ICE has selected a pair (not after the data channel opens) and
// commits to a lane with the first bytes on it (see quicHello in quic.go):
// the QUIC stream, or the data channel when the pair is relayed or QUIC
// did not connect within quicHandshakeTimeout. The acceptor takes
// whichever commitment arrives.
func (h *handshake) negotiate(ctx context.Context, pc *webrtc.PeerConnection, open func(context.Context) (*webrtc.DataChannel, error)) (_ *Conn, err error) {
	type result struct {
		dc  *webrtc.DataChannel
		err error
	}
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel() // the goroutines below end with negotiate, not with the caller's ctx
	opened := make(chan result, 1)
	go func() {
		dc, err := open(octx)
		opened <- result{dc, err}
	}()

	quicDone := make(chan quicResult, 1)
	quicStarted, quicFailed := false, false
	startQUIC := func(f func(context.Context) quicResult) {
		quicStarted = true
		go func() { quicDone <- f(octx) }()
	}
	var chosen *Conn
	defer func() {
		if quicStarted && (chosen == nil || chosen.qc == nil) {
			go func() { // a QUIC connection that lost the race, or is still dialling
				if r := <-quicDone; r.qc != nil {
					r.qc.CloseWithError(quicCodeRefused, "the data channel was chosen")
				}
			}()
		}
	}()
	if !h.dialer && h.useQUIC() {
		startQUIC(h.acceptQUIC)
	}

	var dc *webrtc.DataChannel
	var raw datachannel.ReadWriteCloser
	marker := make(chan error, 1) // acceptor: the dialer's lane choice on the data channel
	useDC := func() (*Conn, error) {
		chosen = newConn(h, pc, dc, raw)
		return h.established(chosen, pc), nil
	}
	var queued []webrtc.ICECandidateInit
	haveRemote := !h.dialer
	for {
		var pairUp <-chan struct{}
		if h.dialer && h.useQUIC() && !quicStarted && !quicFailed {
			pairUp = h.pairUp
		}
		select {
		case <-pairUp:
			startQUIC(func(ctx context.Context) quicResult { return h.dialQUIC(ctx, pc) })
		case r := <-quicDone:
			if r.err == nil {
				h.mark(&h.timings.QUIC)
				chosen = newQUICConn(h, pc, r.qc, r.st)
				return h.established(chosen, pc), nil
			}
			quicStarted, quicFailed = false, true // delivered: nothing left to close
			h.log.Debug("QUIC lane not available; using the data channel", "err", r.err)
			if h.dialer && raw != nil {
				return h.chooseDC(useDC, raw)
			}
		case r := <-opened:
			if r.err != nil {
				return nil, h.failure(r.err)
			}
			dc = r.dc
			if raw, err = dc.Detach(); err != nil {
				return nil, fmt.Errorf("detach data channel: %w", err)
			}
			h.mark(&h.timings.DataChannel)
			switch {
			case !h.useQUIC():
				return useDC()
			case h.dialer && quicFailed:
				return h.chooseDC(useDC, raw)
			case !h.dialer:
				go func() { marker <- readLaneShift(raw) }()
			}
		case err := <-marker:
			if err != nil {
				return nil, err
			}
			return useDC()
		case m := <-h.inbox:
			switch m.Type {
			case signal.TypeError:
				if m.Code == signal.CodeOffline {
					return nil, fmt.Errorf("%w (%s)", ErrPeerOffline, h.peer)
				}
				return nil, fmt.Errorf("signaling server: %s", m.Reason)
			case signal.TypeBye:
				return nil, errors.New("the peer hung up during the handshake")
			case signal.TypeAnswer:
				if !h.dialer || haveRemote {
					continue
				}
				if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP}); err != nil {
					return nil, fmt.Errorf("peer's answer: %w", err)
				}
				if h.qn != nil {
					h.peerFP = parseQUICOffer(m.SDP)
				}
				h.mark(&h.timings.Signaling)
				haveRemote = true
				for _, c := range queued {
					pc.AddICECandidate(c)
				}
				queued = nil
			case signal.TypeCandidate:
				h.addCandidate(pc, m, haveRemote, &queued)
			}
		}
	}
}

// chooseDC tells the acceptor the data channel carries this connection.
func (h *handshake) chooseDC(useDC func() (*Conn, error), raw datachannel.ReadWriteCloser) (*Conn, error) {
	if _, err := raw.Write(dcLaneShift); err != nil {
		return nil, fmt.Errorf("data channel: %w", err)
	}
	return useDC()
}

// readLaneShift reads the dialer's first data-channel message, which must
// say it chose the data channel.
func readLaneShift(raw datachannel.ReadWriteCloser) error {
	buf := make([]byte, 64)
	n, err := raw.Read(buf)
	if err != nil {
		return fmt.Errorf("data channel: %w", err)
	}
	if !bytes.Equal(buf[:n], dcLaneShift) {
		return errors.New("the peer broke the lane protocol: its first data-channel message was not the lane choice")
	}
	return nil
}

// established records the connection on the handshake and keeps feeding
// it late candidates.
func (h *handshake) established(c *Conn, pc *webrtc.PeerConnection) *Conn {
	h.mark(&h.timings.Connected)
	h.mu.Lock()
	c.info.Timings = h.timings
	h.conn = c
	h.mu.Unlock()
	h.log.Debug("peer connection", "lane", c.Lane(), "path", c.info.Path, "local", c.info.Local, "remote", c.info.Remote)
	go h.trickleAfterOpen(c, pc)
	return c
}

// quicExchange writes send on st and reads want back, by ctx's deadline.
func quicExchange(ctx context.Context, st *quic.Stream, send, want []byte) error {
	if d, ok := ctx.Deadline(); ok {
		st.SetReadDeadline(d)
		defer st.SetReadDeadline(time.Time{})
	}
	if _, err := st.Write(send); err != nil {
		return err
	}
	return expect(st, want)
}

// expect reads len(want) bytes from r: they must be want.
func expect(r io.Reader, want []byte) error {
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("the peer broke the lane protocol: unexpected bytes on the QUIC stream")
	}
	return nil
}

type quicResult struct {
	qc  *quic.Conn
	st  *quic.Stream
	err error
}

// dialQUIC runs the dialer's QUIC handshake on the selected pair, from the
// socket behind the selected local candidate, and opens the stream.
func (h *handshake) dialQUIC(ctx context.Context, pc *webrtc.PeerConnection) quicResult {
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return quicResult{err: fmt.Errorf("no selected candidate pair: %v", err)}
	}
	h.mu.Lock()
	known := maps.Clone(h.knownIPs)
	h.mu.Unlock()
	if path, _, _ := selectedPath(pc, known); strings.HasPrefix(path, "relayed") {
		return quicResult{err: errRelayedPair}
	}
	tr, remote, err := h.qn.transportFor(pair)
	if err != nil {
		return quicResult{err: err}
	}
	if h.node.skipQUICDial {
		return quicResult{err: errors.New("QUIC dial skipped (test)")}
	}
	ctx, cancel := context.WithTimeout(ctx, quicHandshakeTimeout)
	defer cancel()
	qc, err := tr.Dial(ctx, remote, h.node.quic.clientTLS(h.peerFP), quicConfig())
	if err != nil {
		return quicResult{err: fmt.Errorf("QUIC handshake with %s: %w", remote, err)}
	}
	st, err := qc.OpenStreamSync(ctx)
	if err == nil {
		err = quicExchange(ctx, st, quicHello, quicAck)
	}
	if err == nil { // the acceptor has checked our certificate and answered: commit
		_, err = st.Write(quicCommit)
	}
	if err != nil {
		qc.CloseWithError(quicCodeRefused, "")
		return quicResult{err: fmt.Errorf("QUIC stream: %w", err)}
	}
	return quicResult{qc: qc, st: st}
}

// acceptQUIC waits for the dialer's QUIC connection and its stream.
func (h *handshake) acceptQUIC(ctx context.Context) quicResult {
	var qc *quic.Conn
	select {
	case qc = <-h.qn.accepted:
	case <-ctx.Done():
		return quicResult{err: ctx.Err()}
	}
	st, err := qc.AcceptStream(ctx)
	if err == nil {
		err = expect(st, quicHello)
	}
	if err == nil { // then wait for the dialer's commitment (it may give up and take the data channel)
		err = quicExchange(ctx, st, quicAck, quicCommit)
	}
	if err != nil {
		qc.CloseWithError(quicCodeRefused, "")
		return quicResult{err: fmt.Errorf("QUIC stream: %w", err)}
	}
	return quicResult{qc: qc, st: st}
}

func (h *handshake) addCandidate(pc *webrtc.PeerConnection, m signal.Message, haveRemote bool, queued *[]webrtc.ICECandidateInit) {
	if m.Candidate == "" {
		return // end of candidates
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal([]byte(m.Candidate), &c); err != nil {
		h.log.Debug("bad candidate from peer", "err", err)
		return
	}
	if parsed, err := ice.UnmarshalCandidate(strings.TrimPrefix(c.Candidate, "candidate:")); err == nil {
		h.mu.Lock()
		h.remoteKind[parsed.Type().String()] = true
		// One address may carry several candidates; the name goes by the
		// most telling: a relay's, else a host's (no NAT in between).
		switch t, prev := parsed.Type(), h.knownIPs[parsed.Address()]; {
		case t == ice.CandidateTypeRelay:
			h.knownIPs[parsed.Address()] = webrtc.ICECandidateTypeRelay
		case t == ice.CandidateTypeHost && prev != webrtc.ICECandidateTypeRelay:
			h.knownIPs[parsed.Address()] = webrtc.ICECandidateTypeHost
		case t == ice.CandidateTypeServerReflexive && prev == 0:
			h.knownIPs[parsed.Address()] = webrtc.ICECandidateTypeSrflx
		}
		h.mu.Unlock()
	}
	if !haveRemote {
		*queued = append(*queued, c)
		return
	}
	if err := pc.AddICECandidate(c); err != nil {
		h.log.Debug("could not add candidate", "err", err)
	}
}

// trickleAfterOpen keeps feeding late candidates (ICE may still improve the
// path) until the connection closes.
func (h *handshake) trickleAfterOpen(c *Conn, pc *webrtc.PeerConnection) {
	var queued []webrtc.ICECandidateInit
	for {
		select {
		case <-c.closed:
			return
		case m := <-h.inbox:
			if m.Type == signal.TypeCandidate {
				h.addCandidate(pc, m, true, &queued)
			}
		}
	}
}

// failure explains a handshake that did not finish: which candidate kinds
// each side had.
func (h *handshake) failure(err error) error {
	h.mu.Lock()
	local, remote := kinds(h.localKinds), kinds(h.remoteKind)
	sig := h.timings.Signaling
	h.mu.Unlock()
	if sig == 0 && h.dialer {
		return fmt.Errorf("no answer from the peer through the signaling server: %w", err)
	}
	hint := ""
	if !strings.Contains(local+remote, "relay") {
		hint = "; no relay was available"
	}
	return fmt.Errorf("%w: ICE did not connect (local candidates: %s; remote candidates: %s%s): %w", ErrNoRoute, local, remote, hint, err)
}

func kinds(m map[string]bool) string {
	if len(m) == 0 {
		return "none"
	}
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// relayHosts returns the IP addresses of the TURN servers: a peer's relay
// candidate lives there, and its checks may arrive before the candidate.
func relayHosts(ctx context.Context, servers []webrtc.ICEServer) []string {
	var ips []string
	for _, s := range servers {
		for _, raw := range s.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil || (u.Scheme != stun.SchemeTypeTURN && u.Scheme != stun.SchemeTypeTURNS) {
				continue
			}
			if ip := net.ParseIP(u.Host); ip != nil {
				ips = append(ips, ip.String())
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			addrs, _ := net.DefaultResolver.LookupIPAddr(lctx, u.Host)
			cancel()
			for _, a := range addrs {
				ips = append(ips, a.IP.String())
			}
		}
	}
	return ips
}

func (n *Node) iceServers() []webrtc.ICEServer {
	if n.cfg.ICEServers == nil {
		return nil
	}
	in := n.cfg.ICEServers()
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		w := webrtc.ICEServer{URLs: s.URLs, Username: s.Username}
		if s.Credential != "" {
			w.Credential = s.Credential
			w.CredentialType = webrtc.ICECredentialTypePassword
		}
		out = append(out, w)
	}
	return out
}
