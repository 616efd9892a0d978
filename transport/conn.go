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
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v3"

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
	DataChannel time.Duration // data channel open
}

// Conn is a peer connection as a net.Conn with stream semantics.
type Conn struct {
	h   *handshake
	pc  *webrtc.PeerConnection
	dc  *webrtc.DataChannel
	raw datachannel.ReadWriteCloser

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
	h.mu.Lock()
	c.info = Info{Peer: h.peer, Timings: h.timings}
	known := maps.Clone(h.knownIPs)
	h.mu.Unlock()
	c.info.Path, c.info.Local, c.info.Remote = selectedPath(pc, known)
	return c
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

func (c *Conn) readErr(err error) error {
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

// Write writes all of p, waiting while the send buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
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
				return written, net.ErrClosed
			case <-expired:
				return written, os.ErrDeadlineExceeded
			case <-time.After(100 * time.Millisecond): // belt and braces
			}
		}
		select {
		case <-c.closed:
			return written, net.ErrClosed
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

// Close closes the data channel and the peer connection and tells the peer.
func (c *Conn) Close() error {
	c.shutdown(true)
	return nil
}

func (c *Conn) closeFromPeer() { c.shutdown(false) }

func (c *Conn) shutdown(sayBye bool) {
	c.closeOnce.Do(func() {
		if sayBye {
			c.drain(2 * time.Second)
		}
		close(c.closed)
		if sayBye {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c.h.send(ctx, signal.Message{Type: signal.TypeBye})
			cancel()
		}
		c.SetReadDeadline(time.Time{}) // stops pion's deadline timer goroutine
		c.raw.Close()
		c.pc.Close()
		c.h.node.forget(c.h.session)
	})
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
	if d, ok := c.raw.(datachannel.ReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return errors.New("read deadlines not supported")
}

// SetWriteDeadline bounds how long Write waits for buffer space.
func (c *Conn) SetWriteDeadline(t time.Time) error {
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
