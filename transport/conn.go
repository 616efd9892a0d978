package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v3"
	"github.com/quic-go/quic-go"

	"kin/keys"
	"kin/signal"
)

// Write sizes and send-side flow control, chosen by measurement: messages
// of this size, and the sender waits while more than highWater bytes are
// queued in SCTP, resuming at lowWater.
const (
	messageSize = 32 << 10
	highWater   = 4 << 20
	lowWater    = 1 << 20
	readSize    = 256 << 10 // larger than any message a peer may send
)

// Info describes an established connection.
type Info struct {
	Peer    keys.PeerID // as the signaling server claims: not authenticated
	Path    string      // "direct (loopback)", "direct (LAN)", "direct (through NAT)", "relayed (TURN)"
	Lane    string      // LaneQUIC or LaneDataChannel: what carries the bytes
	Local   string      // selected local candidate
	Remote  string      // selected remote candidate
	Timings Timings
}

// Timings of the handshake, each from the start of Dial (or the arrival of
// the offer).
type Timings struct {
	Signaling   time.Duration // answer received (dialer) or sent (acceptor)
	ICE         time.Duration // ICE connected
	DTLS        time.Duration // DTLS connected
	DataChannel time.Duration // data channel open (0 if QUIC was ready first)
	QUIC        time.Duration // QUIC stream open (0 if the data channel carries the connection)
	Connected   time.Duration // the lane the connection uses was ready
}

// Conn is a peer connection as a net.Conn with stream semantics: a QUIC
// stream, or the data channel (dc and raw).
type Conn struct {
	h   *handshake
	pc  *webrtc.PeerConnection
	dc  *webrtc.DataChannel
	raw datachannel.ReadWriteCloser
	qc  *quic.Conn
	st  *quic.Stream
	wq  *coalescer // QUIC: Write queues here; one goroutine writes to st

	laneTr     *quic.Transport // QUIC: where extra lanes are dialled from (lanes.go)
	laneRemote *net.UDPAddr    // QUIC: and to

	eof     chan struct{} // QUIC: closed once Read saw the peer's end of stream
	eofOnce sync.Once
	failed  atomic.Pointer[error]

	info Info

	readMu  sync.Mutex
	rbuf    []byte
	pending []byte

	writeMu  sync.Mutex
	drained  chan struct{} // signalled when buffered amount falls to lowWater
	wdMu     sync.Mutex
	wdTimer  *time.Timer
	wdExpire chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
}

func newConn(h *handshake, pc *webrtc.PeerConnection, dc *webrtc.DataChannel, raw datachannel.ReadWriteCloser) *Conn {
	c := &Conn{h: h, pc: pc, dc: dc, raw: raw, rbuf: make([]byte, readSize),
		drained: make(chan struct{}, 1), closed: make(chan struct{}), wdExpire: make(chan struct{})}
	dc.SetBufferedAmountLowThreshold(lowWater)
	dc.OnBufferedAmountLow(func() {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	})
	c.describe(LaneDataChannel)
	return c
}

func newQUICConn(h *handshake, pc *webrtc.PeerConnection, qc *quic.Conn, st *quic.Stream) *Conn {
	c := &Conn{h: h, pc: pc, qc: qc, st: st, eof: make(chan struct{}), closed: make(chan struct{}), wdExpire: make(chan struct{})}
	if coalesceLimit != 0 {
		c.wq = newCoalescer(streamWriter{c}, coalesceLimit, c.writeExpired)
	}
	c.describe(LaneQUIC)
	c.prepareLanes()
	go func() { // QUIC ends: the peer connection ends too
		select {
		case <-qc.Context().Done():
			c.closeFromPeer()
		case <-c.closed:
		}
	}()
	return c
}

func (c *Conn) describe(lane string) {
	h := c.h
	h.mu.Lock()
	c.info = Info{Peer: h.peer, Timings: h.timings, Lane: lane}
	known := maps.Clone(h.knownIPs)
	h.mu.Unlock()
	c.info.Path, c.info.Local, c.info.Remote = selectedPath(c.pc, known)
}

// Route names the path and the lane, for people: "direct (LAN), QUIC",
// "relayed (TURN), data channel".
func (i Info) Route() string {
	if i.Lane == "" {
		return i.Path
	}
	return i.Path + ", " + i.Lane
}

// Lane names how the bytes travel, for people: "direct, QUIC",
// "relayed, data channel" or "direct, data channel".
func (c *Conn) Lane() string {
	where := "direct"
	if strings.HasPrefix(c.info.Path, "relayed") {
		where = "relayed"
	}
	return where + ", " + c.info.Lane
}

// pathChanged checks a newly selected candidate pair against the QUIC
// connection's 5-tuple: QUIC cannot follow the peer to another address
// (quic-go migrates only a client's own socket, and only when asked), so a
// different pair ends the connection with ErrPathChanged instead of
// leaving it to stall until the idle timeout.
func (c *Conn) pathChanged(p *webrtc.ICECandidatePair) {
	if c.qc == nil || p == nil || p.Local == nil || p.Remote == nil {
		return
	}
	la, _ := c.qc.LocalAddr().(*net.UDPAddr)
	ra, _ := c.qc.RemoteAddr().(*net.UDPAddr)
	port, ok := socketPort(*p.Local)
	if ok && la != nil && ra != nil && port == la.Port &&
		net.ParseIP(p.Remote.Address).Equal(ra.IP) && int(p.Remote.Port) == ra.Port {
		return
	}
	c.fail(fmt.Errorf("%w (now %s:%d -> %s:%d)", ErrPathChanged, p.Local.Address, p.Local.Port, p.Remote.Address, p.Remote.Port))
}

// ErrPeerGone is what Read and Write return once nothing has come from
// the peer for a few seconds (peerSilence): its program or its computer
// stopped without a goodbye, or the network between went away.
var ErrPeerGone = errors.New("the peer stopped answering")

// How long a peer may be silent before its Conn ends with ErrPeerGone:
// ICE reports the pair disconnected after iceDisconnectedAfter, and the
// Conn gives it iceLostGrace more to come back. QUIC's idle timeout
// (quicConfig) is the same total.
const (
	iceDisconnectedAfter = 2 * time.Second
	iceLostGrace         = 1500 * time.Millisecond
	peerSilence          = iceDisconnectedAfter + iceLostGrace
)

// iceDisconnected is called when ICE stops hearing from the peer: unless
// it is heard again within iceLostGrace, the connection ends.
func (c *Conn) iceDisconnected() {
	time.AfterFunc(iceLostGrace, func() {
		switch c.pc.ICEConnectionState() {
		case webrtc.ICEConnectionStateDisconnected, webrtc.ICEConnectionStateFailed:
			c.lose()
		}
	})
}

// lose ends the connection because the peer went silent.
func (c *Conn) lose() {
	err := fmt.Errorf("%w: nothing came from it for %s", ErrPeerGone, peerSilence)
	c.failed.CompareAndSwap(nil, &err)
	go c.closeFromPeer()
}

// closedErr is what Write returns on a closed connection.
func (c *Conn) closedErr() error {
	if f := c.failure(); f != nil {
		return f
	}
	return net.ErrClosed
}

// fail ends the connection with err: Read and Write return it.
func (c *Conn) fail(err error) {
	c.failed.CompareAndSwap(nil, &err)
	if c.qc != nil {
		c.qc.CloseWithError(quicCodePathChanged, err.Error())
	}
	go c.closeFromPeer()
}

func (c *Conn) failure() error {
	if p := c.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// selectedPath names the ICE candidate pair in use. known maps the
// addresses of the peer's candidates and of the TURN relays in play to
// their type: a peer-reflexive remote at one of them is that candidate,
// whose trickle had not arrived yet when its first check did (e.g. the
// peer's relay).
func selectedPath(pc *webrtc.PeerConnection, known map[string]webrtc.ICECandidateType) (path, local, remote string) {
	sctp := pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return "unknown", "", ""
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return "unknown", "", ""
	}
	l, r := pair.Local, pair.Remote
	local = fmt.Sprintf("%s:%d (%s)", l.Address, l.Port, l.Typ)
	remote = fmt.Sprintf("%s:%d (%s)", r.Address, r.Port, r.Typ)
	rt := r.Typ
	if t, ok := known[r.Address]; ok && rt == webrtc.ICECandidateTypePrflx {
		rt = t
	}
	lt := l.Typ
	if (lt == webrtc.ICECandidateTypeSrflx || lt == webrtc.ICECandidateTypePrflx) && ownAddress(l.Address) {
		lt = webrtc.ICECandidateTypeHost // a public address: no NAT in between
	}
	path = pathName(lt, rt, net.ParseIP(l.Address), net.ParseIP(r.Address))
	return path, local, remote
}

// ownAddress says whether ip is one of this machine's interface addresses.
func ownAddress(ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

func isPrivate(ip net.IP) bool {
	return ip != nil && (ip.IsPrivate() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip))
}

// cgnat is the carrier-grade NAT range (RFC 6598).
var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// pathName says how packets travel, as a person would put it.
func pathName(local, remote webrtc.ICECandidateType, localIP, remoteIP net.IP) string {
	switch {
	case local == webrtc.ICECandidateTypeRelay || remote == webrtc.ICECandidateTypeRelay:
		return "relayed (TURN)"
	case remoteIP != nil && remoteIP.IsLoopback():
		return "direct (loopback)"
	case isPrivate(remoteIP) && local == webrtc.ICECandidateTypeHost:
		return "direct (LAN)"
	case local == webrtc.ICECandidateTypeHost && remote == webrtc.ICECandidateTypeHost && !isPrivate(localIP):
		return "direct"
	default:
		return "direct (through NAT)"
	}
}

// Info describes the connection.
func (c *Conn) Info() Info { return c.info }

// Read reads the stream; a read may return part of a message.
func (c *Conn) Read(p []byte) (int, error) {
	if c.st != nil {
		n, err := c.st.Read(p)
		if err != nil {
			err = c.quicErr("read", err)
			if err == io.EOF {
				c.eofOnce.Do(func() { close(c.eof) })
			}
		}
		return n, err
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(c.pending) == 0 {
		n, err := c.raw.Read(c.rbuf)
		if n > 0 {
			c.pending = c.rbuf[:n]
			break
		}
		if err != nil {
			return 0, c.readErr(err)
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// quicErr maps a QUIC stream's error to what a net.Conn says.
func (c *Conn) quicErr(op string, err error) error {
	if f := c.failure(); f != nil {
		return fmt.Errorf("%s: %w", op, f)
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	var idle *quic.IdleTimeoutError
	if errors.As(err, &idle) {
		return fmt.Errorf("%s: %w (%w)", op, ErrPeerGone, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		return os.ErrDeadlineExceeded
	}
	var ae *quic.ApplicationError
	closedByPeer := errors.As(err, &ae) && ae.Remote && ae.ErrorCode == quicCodeClosed
	select {
	case <-c.closed:
		if op == "read" || closedByPeer {
			return io.EOF
		}
		return net.ErrClosed
	default:
	}
	if closedByPeer && op == "read" {
		return io.EOF
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (c *Conn) readErr(err error) error {
	if f := c.failure(); f != nil {
		return fmt.Errorf("read: %w", f)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		return os.ErrDeadlineExceeded
	}
	select {
	case <-c.closed:
		return io.EOF
	default:
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("read: %w", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write writes all of p, waiting while the send buffer is full. On QUIC it
// returns once p is queued (see coalescer): an error of the stream is
// returned by a later Write, and Close sends what is queued first.
func (c *Conn) Write(p []byte) (int, error) {
	if c.st != nil && c.wq == nil {
		n, err := streamWriter{c}.Write(p)
		if err != nil {
			err = c.quicErr("write", err)
		}
		return n, err
	}
	if c.st != nil {
		n, err := c.wq.Write(p)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			err = c.quicErr("write", err)
		}
		return n, err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	written := 0
	for len(p) > 0 {
		for c.dc.BufferedAmount() > highWater {
			c.wdMu.Lock()
			expired := c.wdExpire
			c.wdMu.Unlock()
			select {
			case <-c.drained:
			case <-c.closed:
				return written, c.closedErr()
			case <-expired:
				return written, os.ErrDeadlineExceeded
			case <-time.After(100 * time.Millisecond): // belt and braces
			}
		}
		select {
		case <-c.closed:
			return written, c.closedErr()
		default:
		}
		chunk := p
		if len(chunk) > messageSize {
			chunk = chunk[:messageSize]
		}
		n, err := c.raw.Write(chunk)
		written += n
		if err != nil {
			return written, fmt.Errorf("write: %w", err)
		}
		p = p[n:]
	}
	return written, nil
}

// Close closes the lane and the peer connection and tells the peer.
// On QUIC it first sends the end of the stream and waits (at most
// quicCloseWait) until the peer has read it, or, if the peer ended its
// stream first, until the peer closes the connection: closing a QUIC
// connection discards whatever is not yet delivered, so the side that
// closes it is the one that knows both ends have everything.
func (c *Conn) Close() error {
	c.shutdown(true)
	return nil
}

func (c *Conn) closeFromPeer() { c.shutdown(false) }

func (c *Conn) shutdown(sayBye bool) {
	c.closeOnce.Do(func() {
		// A node that is stopping (Ctrl-C, the program ending) gives
		// the tail and the bye a short time: a peer that is gone would
		// otherwise hold every command's exit for seconds.
		wait, byeWait := 2*time.Second, 2*time.Second
		if c.h.node.stopping() {
			wait, byeWait = stoppingCloseWait, stoppingCloseWait
		}
		if sayBye {
			if c.st != nil {
				c.finishQUIC(min(wait, quicCloseWait))
			} else {
				c.drain(wait)
			}
		}
		close(c.closed)
		if sayBye {
			ctx, cancel := context.WithTimeout(context.Background(), byeWait)
			c.h.send(ctx, signal.Message{Type: signal.TypeBye})
			cancel()
		}
		if c.st != nil {
			c.qc.CloseWithError(quicCodeClosed, "")
			if c.wq != nil {
				<-c.wq.close() // the stream's writes end with the connection
			}
		} else {
			c.SetReadDeadline(time.Time{}) // stops pion's deadline timer goroutine
			c.raw.Close()
		}
		c.pc.Close()
		if c.h.qn != nil {
			c.h.qn.close()
		}
		c.h.node.forget(c.h.session)
	})
}

// stoppingCloseWait bounds Close while the node stops: commands exit
// within 2 s of Ctrl-C (cmd's backstop), so closing must take well under.
const stoppingCloseWait = 300 * time.Millisecond

func (c *Conn) finishQUIC(wait time.Duration) {
	peerDone := false
	select {
	case <-c.eof:
		peerDone = true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	var flushed <-chan struct{}
	if c.wq != nil {
		flushed = c.wq.close()
	} else {
		ch := make(chan struct{})
		close(ch)
		flushed = ch
	}
	select { // what Write queued goes first
	case <-flushed:
	case <-c.qc.Context().Done():
	case <-t.C:
		c.st.CancelWrite(quic.StreamErrorCode(quicCodeClosed)) // the peer takes nothing: give up the tail
		<-flushed
		return
	}
	c.st.Close()
	var eof <-chan struct{}
	if !peerDone {
		eof = c.eof
	}
	select {
	case <-eof:
	case <-c.qc.Context().Done():
	case <-t.C:
	}
}

// drain waits (at most max) until what was written has left the SCTP
// send buffer, so closing does not drop the last bytes.
func (c *Conn) drain(max time.Duration) {
	deadline := time.Now().Add(max)
	for c.dc.BufferedAmount() > 0 && time.Now().Before(deadline) {
		if s := c.pc.ConnectionState(); s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type addr string

func (a addr) Network() string { return "webrtc" }
func (a addr) String() string  { return string(a) }

// LocalAddr and RemoteAddr name the selected candidates.
func (c *Conn) LocalAddr() net.Addr  { return addr(c.info.Local) }
func (c *Conn) RemoteAddr() net.Addr { return addr(string(c.info.Peer) + " " + c.info.Remote) }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked Read return os.ErrDeadlineExceeded at t.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.st != nil {
		return c.st.SetReadDeadline(t)
	}
	if d, ok := c.raw.(datachannel.ReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return errors.New("read deadlines not supported")
}

// SetWriteDeadline bounds how long Write waits for buffer space (on QUIC:
// for room in the write queue; what is queued is written regardless).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.st != nil && c.wq == nil { // no queue (benchmarks): Write is the stream's
		return c.st.SetWriteDeadline(t)
	}
	c.wdMu.Lock()
	defer c.wdMu.Unlock()
	if c.wdTimer != nil {
		c.wdTimer.Stop()
	}
	c.wdExpire = make(chan struct{})
	if t.IsZero() {
		return nil
	}
	ch := c.wdExpire
	if d := time.Until(t); d <= 0 {
		close(ch)
	} else {
		c.wdTimer = time.AfterFunc(d, func() { close(ch) })
	}
	return nil
}

// writeExpired is closed once the write deadline has passed.
func (c *Conn) writeExpired() <-chan struct{} {
	c.wdMu.Lock()
	defer c.wdMu.Unlock()
	return c.wdExpire
}

// streamWriter is what the QUIC lane's coalescer writes to.
type streamWriter struct{ c *Conn }

func (w streamWriter) Write(p []byte) (int, error) {
	c := w.c
	// A write waiting for flow-control credit from a peer that is gone
	// must end with the connection (measured: quic-go left it waiting
	// after the connection had timed out, and SSH's Close waited on it).
	stop := context.AfterFunc(c.qc.Context(), func() { c.st.CancelWrite(quic.StreamErrorCode(quicCodeClosed)) })
	defer stop()
	return c.st.Write(p)
}

// Pair is one ICE candidate pair that was tried.
type Pair struct {
	Local, Remote string // "ip:port (type)"
	State         string // succeeded, failed, in-progress, ...
	Selected      bool
}

// Pairs lists the candidate pairs ICE tried for this connection.
func (c *Conn) Pairs() []Pair {
	stats := c.pc.GetStats()
	cand := func(id string) string {
		switch s := stats[id].(type) {
		case webrtc.ICECandidateStats:
			return fmt.Sprintf("%s:%d (%s)", s.IP, s.Port, s.CandidateType)
		}
		return id
	}
	var out []Pair
	for _, s := range stats {
		p, ok := s.(webrtc.ICECandidatePairStats)
		if !ok {
			continue
		}
		pair := Pair{Local: cand(p.LocalCandidateID), Remote: cand(p.RemoteCandidateID), State: string(p.State)}
		pair.Selected = pair.Local == c.info.Local && pair.Remote == c.info.Remote
		out = append(out, pair)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Selected != out[j].Selected {
			return out[i].Selected
		}
		return out[i].Local+out[i].Remote < out[j].Local+out[j].Remote
	})
	return out
}
