package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// coalescer sits between a writer that makes many small writes and a QUIC
// stream. x/crypto/ssh writes every packet (at most 32 KiB of channel
// data) as its own Write and waits for it, and (*quic.Stream).Write
// returns only once quic-go has packed all but the last packet's worth
// of it: SSH's encryption and QUIC's packing would take turns. Write here
// copies into a buffer and returns; one goroutine writes whatever has
// gathered as one stream Write, so the writer encrypts the next packets
// while the last batch is packed, and a batch is flushed as soon as the
// stream takes it: when the writer goes idle, the bytes it wrote are
// already on their way (there is no timer).
//
// Write blocks while limit bytes are waiting. The limit follows the rate
// the stream takes bytes at (queueTime's worth, within minQueue and
// maxQueue): what is queued is what an interactive channel's next packet
// waits behind, so on a slow link the queue stays short. An error of the stream is
// returned by the next Write (bytes accepted before it may be lost, as
// with any net.Conn whose write failed).
type coalescer struct {
	w       io.Writer
	expired func() <-chan struct{} // closed once the write deadline has passed; nil: none

	mu     sync.Mutex
	limit  int // bytes Write may queue; adapts (see adapt) unless fixed
	fixed  bool
	buf    []byte // gathering: appended to by Write
	err    error  // the stream's first error, or errCoalescerClosed
	closed bool

	ready chan struct{} // buf went from empty to not
	space chan struct{} // the flusher took a batch (or stopped)
	done  chan struct{} // the flusher stopped
}

var errCoalescerClosed = net.ErrClosed

// The write queue's bounds, by measurement (BenchmarkSSHOverConn, CPU
// s/GB of both ends with SSH on loopback): no queue 5.1-5.3, a fixed 256
// KiB 4.8-5.1, 1 MiB 4.7-4.8, 4 MiB 4.4-4.9. Larger pays on a fast path
// but costs on a slower one: what is queued (and the batch quic-go is
// packing) is what an interactive channel's next packet waits behind, and
// it counts against SSH's channel window (2 MiB in x/crypto/ssh), which
// on a 10 ms path already holds most of a 1 Gbit/s flight (with 10 ms of
// queue, kin connect there measured 84 and 59 MB/s against 87-107 without
// it: noisy, but the window arithmetic says the same; with 2 ms, 102 and
// 104 against 102 with the queue off, same build). Hence the limit is
// 2 ms of the rate: about 1 MB on loopback, 250 KB at 1 Gbit/s, one SSH
// packet below 130 Mbit/s.
const (
	queueTime = 2 * time.Millisecond
	minQueue  = 32 << 10
	maxQueue  = 4 << 20
)

// coalesceLimit fixes the queue's limit when > 0; 0 turns the queue off;
// -1 lets it adapt. Benchmarks compare.
var coalesceLimit = -1

// newCoalescer makes a queue in front of w; limit > 0 fixes its size,
// otherwise it adapts.
func newCoalescer(w io.Writer, limit int, expired func() <-chan struct{}) *coalescer {
	c := &coalescer{w: w, limit: limit, fixed: limit > 0, expired: expired,
		ready: make(chan struct{}, 1), space: make(chan struct{}, 1), done: make(chan struct{})}
	if !c.fixed {
		// Small until batches tell the rate: a queue that starts big on a
		// slow path holds seconds of data (a file's bytes that other lanes
		// could carry, the next keystroke's wait) before it learns.
		c.limit = minQueue
	}
	go c.flushLoop()
	return c
}

func signal1(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Write queues p; it blocks only while the queue is full.
func (c *coalescer) Write(p []byte) (int, error) {
	var expired <-chan struct{}
	if c.expired != nil {
		expired = c.expired()
		select {
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		default:
		}
	}
	written := 0
	for len(p) > 0 {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return written, err
		}
		room := c.limit - len(c.buf)
		if room <= 0 {
			c.mu.Unlock()
			select {
			case <-c.space:
			case <-c.done:
			case <-expired:
				return written, os.ErrDeadlineExceeded
			}
			continue
		}
		n := min(room, len(p))
		wasEmpty := len(c.buf) == 0
		c.buf = append(c.buf, p[:n]...)
		c.mu.Unlock()
		if wasEmpty {
			signal1(c.ready)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func (c *coalescer) flushLoop() {
	defer close(c.done)
	var spare []byte // the last batch's buffer, reused: both grow only as far as writes fill them
	for {
		<-c.ready
		c.mu.Lock()
		batch := c.buf
		c.buf = spare[:0]
		closed := c.closed
		c.mu.Unlock()
		signal1(c.space)
		if len(batch) > 0 {
			start := time.Now()
			_, err := c.w.Write(batch)
			if err == nil && !c.fixed {
				c.mu.Lock()
				c.limit = adapt(c.limit, len(batch), time.Since(start))
				c.mu.Unlock()
			}
			if err != nil {
				c.mu.Lock()
				if c.err == nil || c.err == errCoalescerClosed {
					c.err = err
				}
				c.mu.Unlock()
				return
			}
		}
		spare = batch
		if closed {
			c.mu.Lock()
			empty := len(c.buf) == 0
			c.mu.Unlock()
			if empty {
				return
			}
			signal1(c.ready)
		}
	}
}

// adapt moves the limit towards queueTime's worth of the rate the stream
// just took a batch at: down at once (what is queued is what the next
// packet waits behind), up at most twice as far per batch (a new
// connection's first batches go out in its first window, faster than the
// path). Small batches say little about the rate (the writer, not the
// stream, was slow): they leave it.
func adapt(limit, n int, took time.Duration) int {
	if limit <= 0 {
		limit = maxQueue
	}
	if n < minQueue {
		return limit
	}
	want := maxQueue
	if took > 0 {
		want = int(min(float64(maxQueue), float64(n)*float64(queueTime)/float64(took)))
	}
	return max(minQueue, min(maxQueue, want, 2*limit))
}

// close stops accepting writes and lets the flusher write what is
// queued; flushed is closed once it has (or the stream failed).
func (c *coalescer) close() (flushed <-chan struct{}) {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		if c.err == nil {
			c.err = errCoalescerClosed
		}
	}
	c.mu.Unlock()
	signal1(c.ready)
	return c.done
}

// failure is the stream's error, if a write to it failed.
func (c *coalescer) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.err, errCoalescerClosed) {
		return nil
	}
	return c.err
}
