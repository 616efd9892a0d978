package session

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/session/files"
)

// LaneConn is what a connection offers when it can carry extra lanes to
// the same peer (transport.Conn on QUIC): file transfers then spread big
// files over several lanes (files/lanes.go). Connections without it, or
// whose HasLanes is false, carry everything on the SSH connection.
type LaneConn interface {
	HasLanes() bool
	// Binding is what both ends of an end-to-end connection derive alike
	// (transport.Conn.Binding); compared inside SSH before any lane is
	// used (laneHub.bind).
	Binding() []byte
	OpenLane(ctx context.Context) (net.Conn, error)
	AcceptLane(ctx context.Context) (net.Conn, error)
	// OpenStream and AcceptStream open and take more streams on the
	// connection itself, beside SSH's (forwarded TCP connections).
	OpenStream(ctx context.Context) (net.Conn, error)
	AcceptStream(ctx context.Context) (net.Conn, error)
}

var _ files.PathReporter = (*laneHub)(nil)

// pathStatser is what a LaneConn may also tell of its path
// (transport.Conn on QUIC): the lane controller paces by it.
type pathStatser interface {
	PathStats() (rtt time.Duration, sent, lost, delivered uint64, ok bool)
}

// laneTokenWait bounds how long an accepted lane may take to present its
// secret.
const laneTokenWait = 10 * time.Second

// forcedLanes reads KIN_LANES: a lane count to use for every big file
// instead of adapting (tests, benchmarks); 0 adapts.
func forcedLanes() int {
	n, err := strconv.Atoi(os.Getenv("KIN_LANES"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// cutLaneAfter reads KIN_TEST_CUT_LANE, for tests: the first extra lane
// this process opens is cut (its QUIC connection closed at once, as a lost
// path would end it) once this many bytes were written on it; 0: never.
func cutLaneAfter() int64 {
	n, err := strconv.ParseInt(os.Getenv("KIN_TEST_CUT_LANE"), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// laneCutter is a lane cut after left more bytes (KIN_TEST_CUT_LANE).
type laneCutter struct {
	net.Conn
	left int64
	log  *slog.Logger
}

func (c *laneCutter) Write(p []byte) (int, error) {
	if int64(len(p)) < c.left {
		n, err := c.Conn.Write(p)
		c.left -= int64(n)
		return n, err
	}
	n, err := c.Conn.Write(p[:c.left])
	c.left -= int64(n)
	if err == nil {
		c.log.Warn("cutting a lane (KIN_TEST_CUT_LANE)")
		c.Conn.Close()
		err = errors.New("lane cut (KIN_TEST_CUT_LANE)")
	}
	return n, err
}

// laneHub is one connection's lanes: it opens lanes with a transfer's
// secret, and gives each lane the peer opens to the transfer whose secret
// it presents. A lane with no valid secret is closed and counted.
type laneHub struct {
	conn LaneConn
	log  *slog.Logger

	ctx     context.Context
	cancel  context.CancelFunc
	once    sync.Once
	wg      sync.WaitGroup
	refused atomic.Int64
	cutAt   int64       // KIN_TEST_CUT_LANE
	cut     atomic.Bool // the lane to cut was opened

	mu      sync.Mutex
	waiting map[*laneWait]bool
	streams map[streamID]chan net.Conn // forwards waiting for their stream
	sOnce   sync.Once

	// bound is closed once the peer's binding was compared; ends is true
	// when it matched ours: the lanes run end to end.
	bound     chan struct{}
	boundOnce sync.Once
	ends      bool
}

type laneWait struct {
	tokens [][]byte
	ch     chan io.ReadWriteCloser
}

// newLaneHub returns nil when conn cannot carry lanes.
func newLaneHub(conn net.Conn, log *slog.Logger) *laneHub {
	lc, ok := conn.(LaneConn)
	if !ok || !lc.HasLanes() {
		return nil
	}
	h := &laneHub{conn: lc, log: log, waiting: map[*laneWait]bool{}, streams: map[streamID]chan net.Conn{},
		cutAt: cutLaneAfter(), bound: make(chan struct{})}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// bindRequest is the SSH global request in which the client hands the
// server its end's binding (LaneConn.Binding); the server answers true
// when it is the same as its own.
const bindRequest = "kin-lanes@kin"

// bindWait bounds how long a transfer waits for the binding's answer
// (sent as the connection starts, it is there long before).
const bindWait = 5 * time.Second

// decide records whether the two ends' bindings matched.
func (h *laneHub) decide(same bool) {
	h.boundOnce.Do(func() {
		h.ends = same
		close(h.bound)
		if !same {
			h.log.Warn("this connection's QUIC does not run end to end (someone in the middle of the path?): files stay inside SSH, on no extra lanes")
		}
	})
}

// bindClient asks the server to compare bindings (the client's side).
func (h *laneHub) bindClient(c *ssh.Client) {
	if h == nil {
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ok, _, err := c.SendRequest(bindRequest, true, h.conn.Binding())
		h.decide(ok && err == nil)
	}()
}

// bindServer answers the client's binding request (the server's side).
func (h *laneHub) bindServer(req *ssh.Request) {
	if h == nil {
		req.Reply(false, nil)
		return
	}
	mine := h.conn.Binding()
	same := len(mine) > 0 && subtle.ConstantTimeCompare(mine, req.Payload) == 1
	h.decide(same)
	req.Reply(same, nil)
}

// endToEnd says, without waiting, whether the bindings matched.
func (h *laneHub) endToEnd() bool {
	if h == nil {
		return false
	}
	select {
	case <-h.bound:
		return h.ends
	default:
		return false
	}
}

// streamID names a forwarded connection's stream: the client makes one,
// names it in the channel that asks for the port, and presents it as the
// stream's first bytes.
type streamID [16]byte

func newStreamID() streamID {
	var id streamID
	rand.Read(id[:])
	return id
}

// streamWait bounds how long a forward waits for its stream, and a stream
// to present its ID.
const streamWait = 10 * time.Second

// openStream opens a stream beside SSH's and presents id on it.
func (h *laneHub) openStream(ctx context.Context, id streamID) (net.Conn, error) {
	s, err := h.conn.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	return present(s, id[:])
}

// present writes name (a lane's secret, a stream's name) as c's first
// bytes; c is closed if that fails.
func present(c net.Conn, name []byte) (net.Conn, error) {
	if _, err := c.Write(name); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// expectStream readies the wait for the stream that presents id (the
// server's side). Call it before the client can know id is accepted, and
// then take or forget.
func (h *laneHub) expectStream(id streamID) *streamWaiter {
	w := &streamWaiter{h: h, id: id, ch: make(chan net.Conn, 1)}
	h.mu.Lock()
	h.streams[id] = w.ch
	h.mu.Unlock()
	h.sOnce.Do(func() {
		h.wg.Add(1)
		go h.serveEach(h.conn.AcceptStream, h.admitStream)
	})
	return w
}

// streamWaiter is a forward waiting for its stream.
type streamWaiter struct {
	h  *laneHub
	id streamID
	ch chan net.Conn
}

// take returns the stream, or nil if none came within streamWait or ctx
// ended first.
func (w *streamWaiter) take(ctx context.Context) net.Conn {
	t := time.NewTimer(streamWait)
	defer t.Stop()
	select {
	case s := <-w.ch:
		return s // admitStream forgot it for us
	case <-t.C:
	case <-ctx.Done():
	case <-w.h.ctx.Done():
	}
	w.forget()
	return nil
}

// forget stops waiting, and closes the stream if it came meanwhile.
func (w *streamWaiter) forget() {
	w.h.mu.Lock()
	if w.h.streams[w.id] == w.ch {
		delete(w.h.streams, w.id)
	}
	w.h.mu.Unlock()
	select {
	case s := <-w.ch:
		s.Close()
	default:
	}
}

// admitStream hands a stream to the forward whose name it presents;
// others are closed and counted.
func (h *laneHub) admitStream(s net.Conn) {
	name, err := h.readName(s, len(streamID{}), streamWait)
	if err == nil {
		h.mu.Lock()
		ch, ok := h.streams[streamID(name)]
		delete(h.streams, streamID(name)) // once
		if ok {
			ch <- s // room for one; under mu, so never after forget drained it
		}
		h.mu.Unlock()
		if ok {
			return
		}
		err = errors.New("no forward named it")
	}
	h.refused.Add(1)
	h.log.Warn("refused a stream", "why", err)
	s.Close()
}

// options are the lane options of a transfer on this connection: none
// unless the bindings matched.
func (h *laneHub) options() files.LaneOptions {
	if !h.waitEndToEnd(context.Background()) {
		return files.LaneOptions{}
	}
	return files.LaneOptions{Lanes: h, Force: forcedLanes(), Logger: h.log}
}

// waitEndToEnd is endToEnd once the bindings were compared (at most
// bindWait, or until ctx ends).
func (h *laneHub) waitEndToEnd(ctx context.Context) bool {
	if h == nil {
		return false
	}
	select {
	case <-h.bound:
	case <-h.ctx.Done():
	case <-ctx.Done():
	case <-time.After(bindWait):
	}
	return h.endToEnd()
}

// Open opens a lane and presents token on it.
func (h *laneHub) Open(ctx context.Context, token []byte) (io.ReadWriteCloser, error) {
	l, err := h.conn.OpenLane(ctx)
	if err != nil {
		return nil, err
	}
	if l, err = present(l, token); err != nil {
		return nil, err
	}
	if h.cutAt > 0 && h.cut.CompareAndSwap(false, true) {
		return &laneCutter{Conn: l, left: h.cutAt, log: h.log}, nil
	}
	return l, nil
}

// PathStats tells the lane controller the connection's round trip and
// losses, when the connection knows them.
func (h *laneHub) PathStats() (files.PathStats, bool) {
	ps, ok := h.conn.(pathStatser)
	if !ok {
		return files.PathStats{}, false
	}
	rtt, sent, lost, delivered, ok := ps.PathStats()
	return files.PathStats{RTT: rtt, Sent: sent, Lost: lost, Delivered: delivered}, ok
}

// Expect delivers the lanes that present one of tokens, each once.
func (h *laneHub) Expect(tokens [][]byte) (<-chan io.ReadWriteCloser, func()) {
	w := &laneWait{tokens: tokens, ch: make(chan io.ReadWriteCloser, len(tokens))}
	h.mu.Lock()
	h.waiting[w] = true
	h.mu.Unlock()
	h.once.Do(func() {
		h.wg.Add(1)
		go h.serveEach(h.conn.AcceptLane, h.admit)
	})
	return w.ch, func() {
		h.mu.Lock()
		delete(h.waiting, w)
		h.mu.Unlock()
		for {
			select {
			case l := <-w.ch:
				l.Close()
			default:
				return
			}
		}
	}
}

// serveEach hands what accept returns to admit, each on its own
// goroutine, until the hub closes.
func (h *laneHub) serveEach(accept func(context.Context) (net.Conn, error), admit func(net.Conn)) {
	defer h.wg.Done()
	for {
		c, err := accept(h.ctx)
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			admit(c)
		}()
	}
}

// readName reads the n bytes a lane or a stream presents first (its
// secret, its name), waiting at most wait.
func (h *laneHub) readName(c net.Conn, n int, wait time.Duration) ([]byte, error) {
	b := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(wait))
	stop := context.AfterFunc(h.ctx, func() { c.Close() })
	_, err := io.ReadFull(c, b)
	stop()
	c.SetReadDeadline(time.Time{})
	return b, err
}

// admit reads a lane's secret and hands the lane to its transfer.
func (h *laneHub) admit(l net.Conn) {
	tok, err := h.readName(l, files.TokenSize, laneTokenWait)
	if err == nil {
		h.mu.Lock()
		for w := range h.waiting {
			if i := files.TokenIndex(w.tokens, tok); i >= 0 {
				w.tokens[i] = nil // once
				w.ch <- l         // room for every token; under mu, so never after stop
				h.mu.Unlock()
				return
			}
		}
		h.mu.Unlock()
		err = errors.New("no transfer handed out its secret")
	}
	h.refused.Add(1)
	h.log.Warn("refused a lane", "why", err)
	l.Close()
}

// close stops taking lanes.
func (h *laneHub) close() {
	if h == nil {
		return
	}
	h.cancel()
	h.wg.Wait()
}
