package files

// Lanes for big files. When the connection can carry extra lanes (QUIC:
// more connections on the same 5-tuple, each its own congestion
// controller), the sender of a big file opens one or more and sends the
// file over them as chunks, each written at its offset into the receiver's
// partial file. The main stream (SSH) carries the file only when no lane
// can open (or the first takes over a second to): a lane is QUIC alone, where the
// main stream is SSH inside QUIC, encrypted twice (one lane on loopback:
// 267 MB/s at 6.1 CPU s/GB, against 216 at 7.3 on the main stream). On a
// lossy long path one loss-based flow is capped by its window; several
// flows on the same path move several times as much.
//
//   - Authorisation: the receiver hands the sender one-time secrets inside
//     the SSH session (in its accept message); a lane's first bytes must be
//     one of them, and each works once. The lanes themselves are pinned to
//     the connection's certificates (transport).
//   - Order and loss: the receiver acknowledges every chunk on a lane once
//     it is written; a lane that fails gives its unacknowledged chunks back
//     to the others (the main stream included). The sender ends a file (its
//     SHA-256, on the main stream) only when every chunk is acknowledged.
//   - Verification: the receiver hashes the file's contiguous prefix as it
//     grows, from the bytes as written, so the SHA-256 check covers the
//     whole file exactly as before.
//   - Resume: the receiver keeps, beside a partial file that has data past
//     a gap, the length of its contiguous prefix (a ".have" file); a resume
//     starts there.
//   - How many: start with one lane, add lanes (x2, x4) while the total
//     rate grows, judged every few round trips, at most maxLanes, and drop
//     back when more did not help (laneController). KIN_LANES=N forces N;
//     1 keeps files on the main stream.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Lanes opens and accepts a transfer's extra lanes to the peer.
type Lanes interface {
	// Open opens a lane to the peer and presents token on it.
	Open(ctx context.Context, token []byte) (io.ReadWriteCloser, error)
	// Expect delivers the lanes that present one of tokens (each works
	// once) until stop is called.
	Expect(tokens [][]byte) (lanes <-chan io.ReadWriteCloser, stop func())
}

// LaneOptions say how a transfer may use extra lanes.
type LaneOptions struct {
	Lanes Lanes // nil: the main stream only
	// Force, when > 1, uses exactly this many lanes for every big file
	// instead of adapting; 1 keeps files on the main stream (KIN_LANES).
	Force  int
	Logger *slog.Logger
}

const (
	maxLanes    = 16
	laneTokens  = 2 * maxLanes // lanes that fail may be replaced
	TokenSize   = 32
	laneMaxOpen = 3 // failed opens before the sender stops trying
	// laneInflight bounds the unacknowledged bytes on one extra lane: what
	// a failing lane gives back, and well above one lane's share of a
	// long fat path.
	laneInflight = 8 << 20
	// sidecarEvery: how often (bytes of contiguous progress) the ".have"
	// file is brought up to date.
	sidecarEvery = 8 << 20
)

// laneFirstWait bounds how long a big file waits for its first lane to
// open before the main stream starts it.
const laneFirstWait = time.Second

// laneMinBytes: files with less than this to send go on the main stream
// alone, as before lanes (a variable for tests).
var laneMinBytes int64 = 4 << 20

// newTokens makes n one-time lane secrets.
func newTokens(n int) ([][]byte, []string) {
	raw := make([][]byte, n)
	hx := make([]string, n)
	for i := range raw {
		raw[i] = make([]byte, TokenSize)
		rand.Read(raw[i])
		hx[i] = hex.EncodeToString(raw[i])
	}
	return raw, hx
}

// parseTokens checks the receiver's lane secrets.
func parseTokens(hx []string) ([][]byte, error) {
	if len(hx) > laneTokens {
		return nil, fmt.Errorf("receiver offered %d lane secrets", len(hx))
	}
	out := make([][]byte, 0, len(hx))
	for _, h := range hx {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != TokenSize {
			return nil, errors.New("receiver offered a malformed lane secret")
		}
		out = append(out, b)
	}
	return out, nil
}

// TokenIndex returns the index of tok in tokens, or -1, in time that does
// not depend on where they differ.
func TokenIndex(tokens [][]byte, tok []byte) int {
	found := -1
	for i, t := range tokens {
		if t != nil && subtle.ConstantTimeCompare(t, tok) == 1 {
			found = i
		}
	}
	return found
}

// PathStats is what a Lanes may also tell about the path a transfer runs
// on (its main connection): the controller paces its looks by the round
// trip and adds lanes only where packets are lost.
type PathStats struct {
	RTT       time.Duration // smoothed round-trip time; 0: not known
	Sent      uint64        // packets sent on the path so far; 0: not known
	Lost      uint64        // of them, lost
	Delivered uint64        // bytes the main connection has delivered so far
	// Fresh: a lane in use has lost no packet yet, so it is still in slow
	// start, moving more than it will once the path's losses cap it.
	Fresh bool
	// Events counts the lanes' loss events: a lane that lost packets
	// within one round trip answers them once (its congestion window
	// shrinks once), so a queue's burst of drops is one event and random
	// losses are one each.
	Events uint64
}

// laneLossRate: a path that loses at least this share of its packets is
// one where several flows move more than one (random loss caps each
// flow's window). Less is a clean path: one burst as slow start
// overshoots a queue, or losses quic-go declares on loopback, where a
// scheduling hiccup is many round trips (measured: a lane on loopback
// counted a few, and the controller went to 16 lanes there).
const laneLossRate = 0.001

// lossy says whether the path loses packets often enough for more lanes
// to pay.
func (p PathStats) lossy() bool {
	if p.Sent == 0 {
		return p.Lost > 0 // the rate is not known
	}
	return float64(p.Lost) >= laneLossRate*float64(p.Sent)
}

// keeps is the most n loss-based flows keep on the path in the long run,
// in bytes per second: a flow's window averages laneMathis/sqrt(p) packets
// where p is the share of packets that start a loss event (Mathis et al.,
// 1997), one window per round trip. 0: the rate of loss events is not
// known well enough, or the path is not lossy (below laneLossRate a full
// queue's drops hold the flows, not loss).
func (p PathStats) keeps(n int) float64 {
	if p.Sent < laneKeepsSent || p.Events < laneKeepsLost || p.RTT <= 0 || !p.lossy() {
		return 0
	}
	loss := float64(p.Events) / float64(p.Sent)
	return float64(n) * lanePacket / p.RTT.Seconds() * laneMathis / math.Sqrt(loss)
}

const (
	// laneMathis: 1.22 is Reno's constant; quic-go's CUBIC moved 0.8-1.0
	// MB/s on 100 Mbit/s, 40 ms, 0.5% loss, where 1.22 gives 0.58.
	laneMathis = 1.8
	lanePacket = 1400 // bytes of data in a full QUIC packet
	// The loss rate is known once this many packets were sent, and this
	// many loss events seen.
	laneKeepsSent, laneKeepsLost = 1000, 5
)

// laneReporter is implemented by a lane that tells how many bytes its
// connection has delivered so far (the bytes written into other lanes
// stand for it) and how many packets it has sent and lost: the lanes
// share the main connection's path, so their losses are the path's.
type laneReporter interface {
	Counts() (delivered, sent, lost uint64)
}

// PathReporter is implemented by a Lanes that knows its path's PathStats.
type PathReporter interface {
	PathStats() (PathStats, bool)
}

// laneController decides how many lanes to use from the bytes the transfer
// has moved, looked at every few round trips (a window). After a change it
// lets the new lanes start (settle: their handshake and slow start), then
// measures a window; on a lossy path it also waits until every lane has
// lost a packet (see laneFreshRTTs).
//
// A step that paid (the total rate grew by at least laneGain over what the
// lanes before it keep) is kept and the next one taken at once: twice the
// lanes, or four times while the lanes added moved about as much each as
// the ones before (the link has room; on a lossy long path every flow adds
// its own loss-capped share). A step that did not pay in two windows goes
// back to the count before it (to its half when it was x4 and gained a
// little), and the next try waits longer each time; but when going back
// costs what the step had gained, it comes back up at once. A step that
// paid is kept even when it paid much less than its size: the rate before
// it was measured while its lanes were new, faster than they stay once
// they lose packets.
//
// It adds lanes where something may hold each lane back: below laneFast,
// on a path that loses packets (or may: its losses are not known), a
// flow's window; at laneFast or more, on any path, the CPU. On a clean
// path below laneFast the link is what holds the transfer, and more flows
// would only cost CPU and crowd a shared link.
type laneController struct {
	n, max  int
	prev    int     // the count before a step being judged; 0: none
	base    float64 // the total rate before that step
	per     float64 // the rate per lane before that step
	factor  int     // the next step multiplies the lanes by this
	doubt   bool    // the step being judged did not pay in one window
	above   int     // the count a step went back from; 0: none
	aboveAt float64 // the total rate it moved then
	hold    int     // windows to wait before the next step up
	backoff int

	started   bool      // a window or a settle is under way
	measuring bool      // the window started at from, fromBytes
	due       time.Time // when the settle or the window ends
	freshEnd  time.Time // a settle waits for fresh lanes until then
	from      time.Time
	fromBytes int64
	fromPath  PathStats // the path's counts at from
	rate      float64   // the last window's rate (for the log)
}

const (
	laneGain = 1.15
	// laneLinear: a step whose new lanes each moved at least this share of
	// what a lane moved before it is followed by a bigger one.
	laneLinear = 0.7
	// laneFast: at this rate lanes are not held by their windows (a flow
	// capped by loss on a long path moves a few MB/s) but may be by the
	// CPU: one QUIC connection is handled on one core at a time (measured
	// on loopback, 2 cores, 1 GiB: 1, 2, 4 and 8 lanes moved 267-290,
	// 302-310, 335-356 and 362 MB/s). Where the link holds them instead,
	// the step does not pay and goes back.
	laneFast      = 100e6
	laneHoldFirst = 4
	laneHoldLimit = 64
	// A window is laneWindowRTTs round trips, a settle laneSettleRTTs,
	// each within these bounds (the upper one also when the round trip is
	// not known).
	laneWindowRTTs, laneSettleRTTs = 4, 3
	laneFirstRTTs                  = 2 // the first window, before any step
	laneWindowMin, laneWindowMax   = 100 * time.Millisecond, 400 * time.Millisecond
	laneSettleMin, laneSettleMax   = 50 * time.Millisecond, 300 * time.Millisecond
	// On a lossy path a settle also waits, at most laneFreshRTTs round
	// trips within these bounds, until every lane has lost a packet (left
	// slow start; at 0.5% loss that takes a lane a few round trips). A
	// window of lanes in slow start measures a rate they do not keep:
	// measured on 100 Mbit/s, 40 ms, 0.5% loss, 8 lanes moved 12.6 MB/s
	// there, the step back to 4 then 2.5.
	laneFreshRTTs              = 20
	laneFreshMin, laneFreshMax = 200 * time.Millisecond, time.Second
	// laneTick is how often the sender shows the controller its progress.
	laneTick = 10 * time.Millisecond
)

func newLaneController(max int) *laneController {
	return &laneController{n: 1, max: max, factor: 2, backoff: laneHoldFirst}
}

// rttSpan is k round trips within [lo, hi]; hi when the round trip is not
// known.
func rttSpan(rtt time.Duration, k int, lo, hi time.Duration) time.Duration {
	if rtt <= 0 {
		return hi
	}
	return min(max(time.Duration(k)*rtt, lo), hi)
}

// firstLook says no step was taken yet: one lane, none being judged, none
// gone back from.
func (c *laneController) firstLook() bool {
	return c.n == 1 && c.prev == 0 && c.backoff == laneHoldFirst
}

// idle says no file is being sent: the next sample starts afresh.
func (c *laneController) idle() { c.started, c.measuring = false, false }

// sample takes the bytes moved so far (a count that only grows) at time
// now, whether every lane asked for is open (ready), and what is known of
// the path, and returns the lane count to use. The settle after a change
// counts from when the lanes are open.
func (c *laneController) sample(now time.Time, moved int64, ready bool, path PathStats, known bool) int {
	window := rttSpan(path.RTT, laneWindowRTTs, laneWindowMin, laneWindowMax)
	settle := rttSpan(path.RTT, laneSettleRTTs, laneSettleMin, laneSettleMax)
	settleFrom := func(now time.Time) {
		c.due = now.Add(settle)
		c.freshEnd = c.due.Add(rttSpan(path.RTT, laneFreshRTTs, laneFreshMin, laneFreshMax))
	}
	switch {
	case !ready && c.started && !c.measuring:
		settleFrom(now)
		return c.n
	case !c.started:
		// A file's first bytes fill buffers at once: handed to the main
		// stream, they run ahead of the path by the SSH window. What the
		// main connection delivered does not.
		c.started = true
		settleFrom(now)
		if known {
			c.due = now
		}
		return c.n
	case now.Before(c.due):
		return c.n
	case !c.measuring && c.n > 1 && known && path.lossy() && path.Fresh && now.Before(c.freshEnd):
		// (One lane is not waited for: the first look only asks whether
		// it is slow, and a step judged against its slow start comes
		// back up once the one lane falls.)
		return c.n
	case !c.measuring:
		if c.firstLook() {
			// The first look only asks whether one lane is slow on a
			// lossy path; the rate it takes is what the first step is
			// judged against, and a step that paid is kept.
			window = rttSpan(path.RTT, laneFirstRTTs, laneSettleMin, laneWindowMax)
		}
		c.measuring, c.from, c.fromBytes, c.due = true, now, moved, now.Add(window)
		c.fromPath = path
		return c.n
	}
	rate := float64(moved-c.fromBytes) / now.Sub(c.from).Seconds()
	c.rate = rate
	before := c.n
	if known && c.firstLook() {
		// The first step on a path whose losses are known, and no step
		// has failed yet: on a lossy path each flow adds its share; on a
		// clean fast one, x2 gains too little to tell from noise.
		c.factor = 4
	}
	keeps := 0.0
	if known {
		// The window's own loss rate: the losses of a slow start that
		// overshot a queue (a clean fast link's) are behind it.
		in := PathStats{RTT: path.RTT, Sent: path.Sent - c.fromPath.Sent, Lost: path.Lost - c.fromPath.Lost, Events: path.Events - c.fromPath.Events}
		keeps = in.keeps(c.n)
	}
	c.judge(rate, keeps, !known || path.lossy())
	if c.n != before {
		c.measuring = false
		settleFrom(now)
	} else {
		c.from, c.fromBytes, c.due = now, moved, now.Add(window)
		c.fromPath = path
	}
	return c.n
}

// judge takes the total rate over the last window, the most the lanes in
// use keep on this path (0: not known) and whether the path loses packets
// (or may: not known).
func (c *laneController) judge(rate, keeps float64, lossy bool) {
	per := rate / float64(c.n)
	if c.prev != 0 {
		if rate < c.base*laneGain && !c.doubt {
			// It did not pay in this window: look at one more before
			// going back (many new flows overshoot the link together in
			// slow start, and all lose at once for a round trip or two).
			c.doubt = true
			return
		}
		c.doubt = false
		if rate < c.base*laneGain { // the step did not pay: back, and wait
			back := c.prev
			if c.n >= 4*c.prev && rate > c.base {
				// A big step that gained a little: its half may be what
				// pays (new lanes that just left slow start look faster
				// than they will stay).
				back = 2 * c.prev
			}
			c.above, c.aboveAt = c.n, rate
			c.n, c.prev, c.factor = back, 0, 2
			c.hold, c.backoff = c.backoff, min(2*c.backoff, laneHoldLimit)
			return
		}
		c.factor = 2 // it paid: keep it, and try the next step now
		if per >= c.per*laneLinear && rate < laneFast {
			// (Not on a fast path, whose lanes share the cores: a first
			// look at one lane there also sees its flow-control window
			// still growing, so four look as if each moved as much.)
			c.factor = 4
		}
		c.prev = 0
	}
	if c.above != 0 && rate*laneGain < c.aboveAt && rate < laneFast {
		// Going back cost what the step had gained: the step paid after
		// all. On a lossy path the fewer lanes ran above what they keep
		// while the step was judged, and fall back once losses cap them.
		// (Lanes held by the CPU do not fall: there, a slow window is
		// the machine's noise.)
		c.n, c.above, c.hold = c.above, 0, 0
		return
	}
	// The next step is judged against what these lanes keep: lanes that
	// just left slow start run above it for a while, and a step judged
	// against that rate looks as if it did not pay (measured: 4 lanes at
	// 11-12.6 MB/s on 100 Mbit/s, 0.5% loss; 16 then moved 12.2, and the
	// 8 lanes the step went back to fell to 8 MB/s).
	if keeps > 0 {
		rate = min(rate, keeps)
	}
	c.base, c.per = rate, rate/float64(c.n)
	if c.hold > 0 {
		c.hold--
		return
	}
	if c.n >= c.max || (rate < laneFast && !lossy) {
		return // a clean path holds one flow back by nothing but the link
	}
	c.prev, c.n, c.above = c.n, min(c.factor*c.n, c.max), 0
}

// spans is a set of byte ranges [start, end), sorted and disjoint.
type spans []span

type span struct{ start, end int64 }

// add inserts [s, e) and returns how many of its bytes were new.
func (ss *spans) add(s, e int64) int64 {
	if s >= e {
		return 0
	}
	out := (*ss)[:0:0]
	added := e - s
	for _, x := range *ss {
		switch {
		case x.end < s || x.start > e: // apart
			out = append(out, x)
		default: // overlapping or touching: merge
			if ov := min(x.end, e) - max(x.start, s); ov > 0 {
				added -= ov
			}
			s, e = min(s, x.start), max(e, x.end)
		}
	}
	i := 0
	for i < len(out) && out[i].start < s {
		i++
	}
	out = append(out, span{})
	copy(out[i+1:], out[i:])
	out[i] = span{s, e}
	*ss = out
	return added
}

// laneSet is the sender's side of a transfer's extra lanes.
type laneSet struct {
	opts     LaneOptions
	ctx      context.Context
	cancel   context.CancelFunc
	tokens   [][]byte
	ctrl     *laneController
	inUse    atomic.Int32 // lanes carrying the transfer (1 while the main stream does)
	mostUsed atomic.Int32
	// The controller's view of the rate, finer than acknowledgements of
	// whole chunks: what the lanes' and the main connection's congestion
	// controllers say was delivered; else the bytes written into lanes (in
	// pieces of laneCountPiece) and handed to the main stream (handing
	// runs ahead by the SSH window).
	laneMoved, mainMoved atomic.Int64
	goneDelivered        int64  // lanes lost or retired: what they delivered (under mu)
	goneSent, goneLost   uint64 // and the packets they sent and lost
	goneEvents           uint64 // and their loss events

	mu        sync.Mutex
	cond      *sync.Cond
	live      []*sendLane // extra lanes open (retiring ones included)
	opening   int
	openFails int
	target    int // lanes wanted
	file      *fileJob
	err       error // the transfer failed: everyone stops
	closed    bool
	wg        sync.WaitGroup
}

// fileJob is the big file being sent in chunks.
type fileJob struct {
	index       int
	f           *os.File
	next, end   int64
	h           hash.Hash
	requeue     []span // chunks given back by a lane that failed
	outstanding int    // chunks on lanes not yet acknowledged
	progress    func(n int)
}

type sendLane struct {
	conn      io.ReadWriteCloser
	out       map[int64]int // offset -> length, unacknowledged, of the current file
	unacked   int64
	retire    bool
	dead      bool
	delivered int64  // what its connection delivered, last asked (laneReporter)
	sent      uint64 // and the packets it sent
	lost      uint64 // and lost
	events    uint64 // its loss events (PathStats.Events)
	lossAt    time.Time
}

func newLaneSet(ctx context.Context, opts LaneOptions, tokens [][]byte) *laneSet {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ls := &laneSet{opts: opts, tokens: tokens, ctrl: newLaneController(maxLanes), target: 1}
	ls.ctx, ls.cancel = context.WithCancel(ctx)
	ls.cond = sync.NewCond(&ls.mu)
	ls.inUse.Store(1)
	ls.mostUsed.Store(1)
	if opts.Force > 0 {
		ls.target = min(opts.Force, maxLanes)
	}
	// The caller's ctx ending wakes whoever waits (it ends with close).
	context.AfterFunc(ls.ctx, func() {
		ls.mu.Lock()
		ls.cond.Broadcast()
		ls.mu.Unlock()
	})
	if opts.Force <= 0 {
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			ls.control()
		}()
	}
	return ls
}

// lanes is how many lanes carry the transfer now (1: the main stream, while
// no lane is open).
func (ls *laneSet) lanes() int { return int(ls.inUse.Load()) }

// active is how many extra lanes take chunks (under mu).
func (ls *laneSet) active() int {
	n := 0
	for _, l := range ls.live {
		if !l.dead && !l.retire {
			n++
		}
	}
	return n
}

func (ls *laneSet) countLanes() { // under mu
	n := max(1, ls.active())
	ls.inUse.Store(int32(n))
	if int32(n) > ls.mostUsed.Load() {
		ls.mostUsed.Store(int32(n))
	}
}

// control feeds the controller the bytes moved while a big file is being
// sent.
func (ls *laneSet) control() {
	t := time.NewTicker(laneTick)
	defer t.Stop()
	pr, _ := ls.opts.Lanes.(PathReporter)
	for {
		select {
		case <-ls.ctx.Done():
			return
		case now := <-t.C:
			ls.mu.Lock()
			busy, ready := ls.file != nil, ls.opening == 0
			ls.mu.Unlock()
			if !busy {
				ls.ctrl.idle()
				continue
			}
			var path PathStats
			known := false
			if pr != nil {
				path, known = pr.PathStats()
			}
			delivered, lanes := ls.lanesDelivered(now, path.RTT)
			path.Sent += lanes.Sent
			path.Lost += lanes.Lost
			path.Fresh, path.Events = lanes.Fresh, lanes.Events
			moved := ls.laneMoved.Load() + delivered
			if known {
				moved += int64(path.Delivered)
			} else {
				moved += ls.mainMoved.Load()
			}
			n := ls.ctrl.sample(now, moved, ready, path, known)
			ls.mu.Lock()
			if ls.file != nil && n != ls.target {
				ls.opts.Logger.Debug("lanes", "from", ls.target, "to", n, "MB/s", fmt.Sprintf("%.2f", ls.ctrl.rate/1e6), "rtt", path.RTT, "lost", path.Lost)
				ls.target = n
				ls.reconcile()
			}
			ls.mu.Unlock()
		}
	}
}

// lanesDelivered is what the lanes that tell it (laneReporter) have
// delivered so far, and their packets sent and lost and loss events (a
// round trip rtt counts one per lane), the ones gone included; Fresh says
// a lane in use has lost none yet.
func (ls *laneSet) lanesDelivered(now time.Time, rtt time.Duration) (delivered int64, lanes PathStats) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delivered = ls.goneDelivered
	lanes = PathStats{Sent: ls.goneSent, Lost: ls.goneLost, Events: ls.goneEvents}
	for _, l := range ls.live {
		if d, ok := l.conn.(laneReporter); ok {
			got, s, x := d.Counts()
			if x > l.lost && now.Sub(l.lossAt) >= rtt {
				l.events++
				l.lossAt = now
			}
			l.delivered = max(l.delivered, int64(got))
			l.sent, l.lost = max(l.sent, s), max(l.lost, x)
			delivered += l.delivered
			lanes.Sent += l.sent
			lanes.Lost += l.lost
			lanes.Events += l.events
			lanes.Fresh = lanes.Fresh || (l.lost == 0 && !l.dead && !l.retire)
		}
	}
	return delivered, lanes
}

// laneCountPiece: a lane's writes are counted (laneSet.laneMoved) in pieces of
// at most this; each returns once the lane has taken it.
const laneCountPiece = 16 << 10

// countingWriter writes to a lane in pieces and counts each.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		k, err := c.w.Write(p[done:min(len(p), done+laneCountPiece)])
		done += k
		c.n.Add(int64(k))
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// reconcile opens or retires lanes towards the target (under mu).
func (ls *laneSet) reconcile() {
	if ls.closed || ls.err != nil {
		return
	}
	var active []*sendLane
	for _, l := range ls.live {
		if !l.dead && !l.retire {
			active = append(active, l)
		}
	}
	want := ls.target
	for have := len(active) + ls.opening; have < want && len(ls.tokens) > 0 && ls.openFails < laneMaxOpen; have++ {
		tok := ls.tokens[0]
		ls.tokens = ls.tokens[1:]
		ls.opening++
		ls.wg.Add(1)
		go ls.open(tok)
	}
	for len(active) > max(want, 0) { // the newest go first
		active[len(active)-1].retire = true
		active = active[:len(active)-1]
	}
	ls.countLanes()
	ls.cond.Broadcast()
}

func (ls *laneSet) open(tok []byte) {
	defer ls.wg.Done()
	conn, err := ls.opts.Lanes.Open(ls.ctx, tok)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.opening--
	ls.cond.Broadcast()
	if err != nil {
		ls.openFails++
		ls.opts.Logger.Debug("could not open a lane", "err", err)
		return
	}
	if ls.closed || ls.err != nil {
		conn.Close()
		return
	}
	l := &sendLane{conn: conn, out: map[int64]int{}}
	ls.live = append(ls.live, l)
	ls.countLanes()
	ls.wg.Add(2)
	go ls.work(l)
	go ls.acks(l)
}

// start makes job the file the lanes carry.
func (ls *laneSet) start(job *fileJob) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.reconcile()
	// The file goes on lanes from its first byte: on a forced count's
	// lanes, or on the first lane, waited for at most laneFirstWait (a
	// handshake on a slow path; then the main stream starts the file).
	deadline := time.Now().Add(laneFirstWait)
	wake := time.AfterFunc(laneFirstWait, func() {
		ls.mu.Lock()
		ls.cond.Broadcast()
		ls.mu.Unlock()
	})
	defer wake.Stop()
	for ls.opening > 0 && ls.ctx.Err() == nil && (ls.opts.Force > 1 || (ls.active() == 0 && time.Now().Before(deadline))) {
		ls.cond.Wait()
	}
	ls.file = job
	ls.cond.Broadcast()
}

func (ls *laneSet) stop() {
	ls.mu.Lock()
	ls.file = nil
	ls.mu.Unlock()
}

// fail stops every lane's sending: the transfer failed.
func (ls *laneSet) fail(err error) {
	ls.mu.Lock()
	if ls.err == nil {
		ls.err = err
	}
	ls.cond.Broadcast()
	ls.mu.Unlock()
}

// close ends every lane and waits for their goroutines.
func (ls *laneSet) close() {
	ls.mu.Lock()
	ls.closed = true
	for _, l := range ls.live {
		l.conn.Close()
	}
	ls.cond.Broadcast()
	ls.mu.Unlock()
	ls.cancel()
	ls.wg.Wait()
}

// take hands out the next chunk of the current file (its index), filling
// buf: a chunk given back by a failed lane, else the next new one (hashed
// here, in order). l is the lane taking it, nil for the main stream, which
// takes chunks only while no lane does. It waits while there is nothing to
// take but chunks are still out on lanes (calling wait first, once, if
// given); ok is false when the file is complete (for a lane: when it
// should stop taking: retired, lost, or the transfer is over).
func (ls *laneSet) take(l *sendLane, buf []byte, wait func()) (index int, off int64, data []byte, ok bool, err error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for {
		if ls.err != nil {
			return 0, 0, nil, false, ls.err
		}
		if err := ls.ctx.Err(); err != nil {
			return 0, 0, nil, false, err
		}
		job := ls.file
		if l != nil && (l.dead || ls.closed || (l.retire && len(l.out) == 0)) {
			return 0, 0, nil, false, nil
		}
		if job != nil && ((l == nil && ls.active() == 0) || (l != nil && !l.retire && l.unacked < laneInflight)) {
			fresh := true
			if len(job.requeue) > 0 {
				s := job.requeue[0]
				off, data, fresh = s.start, buf[:s.end-s.start], false
			} else if job.next < job.end {
				off, data = job.next, buf[:min(int64(len(buf)), job.end-job.next)]
			}
			if data != nil {
				// Read under the lock: the chunk must never be nowhere
				// (neither queued nor out) while the main stream checks
				// whether the file is complete. Reads are sequential
				// and mostly from the page cache.
				if _, rerr := job.f.ReadAt(data, off); rerr != nil {
					return 0, 0, nil, false, fmt.Errorf("read: %w", rerr)
				}
				if fresh {
					job.h.Write(data)
					job.next += int64(len(data))
				} else {
					job.requeue = job.requeue[1:]
				}
				ls.hand(l, job, off, len(data), fresh)
				return job.index, off, data, true, nil
			}
		}
		if l == nil && job != nil && job.outstanding == 0 && len(job.requeue) == 0 && job.next >= job.end {
			return 0, 0, nil, false, nil // the main stream: the file is complete
		}
		if wait != nil {
			ls.mu.Unlock()
			wait()
			ls.mu.Lock()
			wait = nil
			continue
		}
		ls.cond.Wait()
	}
}

// hand records a chunk given to l (under mu).
func (ls *laneSet) hand(l *sendLane, job *fileJob, off int64, n int, fresh bool) {
	if l == nil {
		ls.mainMoved.Add(int64(n))
	} else {
		l.out[off] = n
		l.unacked += int64(n)
		job.outstanding++
	}
	if fresh && job.progress != nil {
		job.progress(n)
	}
}

// work sends chunks on lane l until it retires, fails or the transfer ends.
func (ls *laneSet) work(l *sendLane) {
	defer ls.wg.Done()
	var out io.Writer = l.conn
	if _, ok := l.conn.(laneReporter); !ok {
		out = countingWriter{l.conn, &ls.laneMoved}
	}
	w := frameWriter{bufio.NewWriterSize(out, dataChunk+64)}
	buf := make([]byte, dataChunk)
	hdr := make([]byte, 0, 2*binary.MaxVarintLen64)
	for {
		index, off, data, ok, err := ls.take(l, buf, nil)
		if err != nil || !ok {
			l.conn.Close() // retired with everything acknowledged, lost, or the end
			return
		}
		err = writeChunk(w, hdr[:0], index, off, data)
		if err == nil {
			err = w.w.Flush()
		}
		if err != nil {
			ls.lose(l, err)
			return
		}
	}
}

// writeChunk writes one chunk frame: header and data without a copy.
func writeChunk(w frameWriter, hdr []byte, index int, off int64, data []byte) error {
	hdr = appendChunkHeader(hdr, index, off)
	var lenb [1 + 10]byte
	lenb[0] = frameChunk
	n := binary.PutUvarint(lenb[1:], uint64(len(hdr)+len(data)))
	if _, err := w.w.Write(lenb[:1+n]); err != nil {
		return err
	}
	if _, err := w.w.Write(hdr); err != nil {
		return err
	}
	_, err := w.w.Write(data)
	return err
}

// acks reads lane l's acknowledgements.
func (ls *laneSet) acks(l *sendLane) {
	defer ls.wg.Done()
	r := bufio.NewReaderSize(l.conn, 4<<10)
	buf := make([]byte, 64)
	for {
		typ, payload, err := readFrame(r, buf)
		if err == nil && typ != frameAck {
			err = fmt.Errorf("unexpected frame type %d on a lane", typ)
		}
		var index, n int
		var off int64
		if err == nil {
			index, off, n, err = decodeAck(payload)
		}
		if err != nil {
			ls.lose(l, err)
			return
		}
		ls.mu.Lock()
		if job := ls.file; job != nil && job.index == index {
			if got, ok := l.out[off]; ok && got == n {
				delete(l.out, off)
				l.unacked -= int64(n)
				job.outstanding--
				ls.cond.Broadcast()
			}
		}
		ls.mu.Unlock()
	}
}

// lose ends lane l: its unacknowledged chunks go back to the others.
func (ls *laneSet) lose(l *sendLane, err error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l.dead {
		return
	}
	l.dead = true
	l.conn.Close()
	quiet := ls.closed || ls.err != nil || (l.retire && len(l.out) == 0)
	if !quiet {
		ls.opts.Logger.Debug("lane lost; its chunks go on the other lanes", "chunks", len(l.out), "err", err)
	}
	if job := ls.file; job != nil {
		for off, n := range l.out {
			job.requeue = append(job.requeue, span{off, off + int64(n)})
			job.outstanding--
		}
	}
	l.out, l.unacked = nil, 0
	ls.goneDelivered += l.delivered
	ls.goneSent += l.sent
	ls.goneLost += l.lost
	ls.goneEvents += l.events
	for i, x := range ls.live {
		if x == l {
			ls.live = append(ls.live[:i], ls.live[i+1:]...)
			break
		}
	}
	ls.countLanes()
	if !quiet && ls.file != nil {
		ls.reconcile() // replace it, while secrets last
	}
	ls.cond.Broadcast()
}
