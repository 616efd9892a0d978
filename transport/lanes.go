package transport

// Extra lanes: more QUIC connections on the 5-tuple the connection's QUIC
// runs on, each its own congestion controller. On a lossy long path one
// loss-based flow is capped by its window; N flows on the same path move
// about N times as much (measured on 100 Mbit/s, 40 ms, 0.5% loss: 1 ->
// 0.8 MB/s, 4 -> 3.6, 16 -> 8.8). Either end may open a lane; the other
// accepts it. A lane is pinned to the same certificates as the
// connection's QUIC and must come from the connection's own peer address
// to the socket the connection uses. What a lane may do is the session's
// business: it authorises each one with a secret handed over inside SSH.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"
)

const (
	laneALPN = "kin-lane"
	// maxPendingLanes bounds the lanes accepted but not yet taken.
	maxPendingLanes = 32
	// laneStreamWait bounds how long an accepted lane may take to open its
	// stream (its first bytes).
	laneStreamWait = 10 * time.Second
)

// ErrNoLanes is returned by OpenLane and AcceptLane on a connection that
// cannot carry extra lanes: the data channel carries it (a relayed path, a
// peer without QUIC, or KIN_LANE=datachannel).
var ErrNoLanes = errors.New("this connection has no extra lanes (its bytes go over the data channel)")

// HasLanes says whether OpenLane and AcceptLane can work: the connection
// runs on QUIC.
func (c *Conn) HasLanes() bool { return c.qc != nil }

// OpenLane opens an extra lane to the peer: a new QUIC connection from the
// connection's socket to the peer's address, pinned to the peer's
// certificate, with one stream. Nothing reaches the peer until the first
// Write.
func (c *Conn) OpenLane(ctx context.Context) (net.Conn, error) {
	if c.qc == nil || c.laneTr == nil {
		return nil, ErrNoLanes
	}
	ctx, cancel := context.WithTimeout(ctx, quicHandshakeTimeout)
	defer cancel()
	tlsc := c.h.node.quic.clientTLS(c.h.peerFP)
	tlsc.NextProtos = []string{laneALPN}
	qc, err := c.laneTr.Dial(ctx, c.laneRemote, tlsc, quicConfig())
	if err != nil {
		return nil, fmt.Errorf("open lane: QUIC handshake with %s: %w", c.laneRemote, err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(quicCodeRefused, "")
		return nil, fmt.Errorf("open lane: %w", err)
	}
	return &laneConn{streamConn{qc: qc, st: st}}, nil
}

// AcceptLane returns the next lane the peer opened (once it has sent its
// first bytes). Lanes that arrive from anywhere but the connection's own
// 5-tuple are refused.
func (c *Conn) AcceptLane(ctx context.Context) (net.Conn, error) {
	if c.qc == nil || c.h.qn == nil {
		return nil, ErrNoLanes
	}
	for {
		select {
		case l := <-c.h.qn.lanes:
			if !c.sameTuple(l.qc) {
				c.h.log.Warn("refused a QUIC lane from another address", "from", l.qc.RemoteAddr(), "to", l.qc.LocalAddr())
				l.qc.CloseWithError(quicCodeRefused, "not this connection's path")
				continue
			}
			return l, nil
		case <-c.closed:
			return nil, net.ErrClosed
		case <-c.qc.Context().Done():
			return nil, net.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Conn) sameTuple(qc *quic.Conn) bool {
	la, _ := qc.LocalAddr().(*net.UDPAddr)
	ra, _ := qc.RemoteAddr().(*net.UDPAddr)
	ml, _ := c.qc.LocalAddr().(*net.UDPAddr)
	mr, _ := c.qc.RemoteAddr().(*net.UDPAddr)
	return la != nil && ra != nil && ml != nil && mr != nil &&
		la.Port == ml.Port && ra.Port == mr.Port && ra.IP.Equal(mr.IP)
}

// prepareLanes finds the QUIC transport of the connection's socket (to
// dial lanes from) and makes sure it listens for the peer's lanes (the
// acceptor's sockets listen from the start; the dialer's from now on).
func (c *Conn) prepareLanes() {
	h := c.h
	la, _ := c.qc.LocalAddr().(*net.UDPAddr)
	ra, _ := c.qc.RemoteAddr().(*net.UDPAddr)
	if h.qn == nil || la == nil || ra == nil {
		return
	}
	h.qn.mu.Lock()
	p := h.qn.byPort[la.Port]
	h.qn.mu.Unlock()
	if p == nil {
		return
	}
	if h.qn.serverTLS == nil { // the dialer: listen on this socket for lanes only
		stls := h.node.quic.serverTLS(h.peerFP)
		stls.NextProtos = []string{laneALPN}
		ln, err := p.tr.Listen(stls, quicConfig())
		if err != nil {
			h.log.Debug("cannot listen for lanes", "err", err)
			return
		}
		go h.qn.acceptLoop(ln)
	}
	c.laneTr, c.laneRemote = p.tr, ra
}

// takeLane (acceptLoop) waits for a lane's stream and queues the lane for
// AcceptLane.
func (n *quicNet) takeLane(qc *quic.Conn) {
	ctx, cancel := context.WithTimeout(qc.Context(), laneStreamWait)
	defer cancel()
	st, err := qc.AcceptStream(ctx)
	if err != nil {
		qc.CloseWithError(quicCodeRefused, "no stream")
		return
	}
	select {
	case n.lanes <- &laneConn{streamConn{qc: qc, st: st}}:
	default:
		qc.CloseWithError(quicCodeRefused, "too many lanes waiting")
	}
}

// laneConn is one lane: a stream on its own QUIC connection, which Close
// ends.
type laneConn struct{ streamConn }

// Close ends the lane at once: whatever is not yet delivered is dropped,
// so the session closes a lane only when the peer has everything it needs.
func (l *laneConn) Close() error {
	l.qc.CloseWithError(quicCodeClosed, "")
	return nil
}

func laneErr(op string, err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.ErrorCode == quicCodeClosed {
		if ae.Remote {
			return io.EOF
		}
		return net.ErrClosed
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		var idle *quic.IdleTimeoutError
		if errors.As(err, &idle) {
			return fmt.Errorf("lane %s: the peer stopped answering: %w", op, err)
		}
		return os.ErrDeadlineExceeded
	}
	return fmt.Errorf("lane %s: %w", op, err)
}

// Binding is a value both ends of the connection's QUIC derive alike from
// its handshake (a TLS exporter, RFC 8446 7.5) and that no one in the
// middle can make the same on both sides: the certificates QUIC pins come
// through the signaling server, which is not trusted, so a session that
// sends bytes on lanes (QUIC alone, not inside SSH) first compares the
// two ends' values inside SSH. Equal, the connection's QUIC runs end to
// end, and so do its lanes, pinned to the same certificates. nil without
// QUIC.
func (c *Conn) Binding() []byte {
	if c.qc == nil {
		return nil
	}
	st := c.qc.ConnectionState().TLS
	b, err := st.ExportKeyingMaterial("EXPORTER-kin-lanes", nil, 32)
	if err != nil {
		return nil
	}
	return b
}

// PathStats tells what the connection's QUIC knows of its path: the
// smoothed round-trip time, the packets sent and lost and the bytes
// delivered so far (deliveredBytes). ok is false on a connection without
// QUIC.
func (c *Conn) PathStats() (rtt time.Duration, sent, lost, delivered uint64, ok bool) {
	if c.qc == nil {
		return 0, 0, 0, 0, false
	}
	st := c.qc.ConnectionStats()
	return st.SmoothedRTT, st.PacketsSent, st.PacketsLost, deliveredBytes(st), true
}

// The session's lane controller reads a lane's counts through Counts
// (session/files' laneReporter, which it looks for by this shape).
var _ interface {
	Counts() (delivered, sent, lost uint64)
} = (*laneConn)(nil)

// Counts is how many bytes the lane's connection has delivered so far
// (deliveredBytes), and how many packets it has sent and lost.
func (l *laneConn) Counts() (delivered, sent, lost uint64) {
	st := l.qc.ConnectionStats()
	return deliveredBytes(st), st.PacketsSent, st.PacketsLost
}

// deliveredBytes estimates the bytes a QUIC connection has had acknowledged:
// what it sent, less what it lost, less a congestion window in flight. Sent
// bytes alone run ahead of the path while a queue on it fills (a flow in
// slow start sends faster than the link), acknowledged ones do not.
func deliveredBytes(st quic.ConnectionStats) uint64 {
	out := st.BytesLost + st.CongestionWindow
	if st.BytesSent < out {
		return 0
	}
	return st.BytesSent - out
}
