package transport

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kin/internal/testconn"
)

// randomWrites writes payload in pieces of random sizes (1 B to 100 KiB).
func randomWrites(w io.Writer, payload []byte) error {
	for len(payload) > 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(100<<10))
		k := min(int(n.Int64())+1, len(payload))
		if _, err := w.Write(payload[:k]); err != nil {
			return err
		}
		payload = payload[k:]
	}
	return nil
}

// Bytes written in pieces of every size, through a queue much smaller than
// the payload (so Write waits for room again and again), arrive whole and
// in order.
func TestCoalescerKeepsEveryByteInOrder(t *testing.T) {
	d, a := testconn.TCPPair(t)
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	q := newCoalescer(d, 64<<10, nil)
	checkDelivery(t, a, payload, func() error {
		defer d.Close()
		err := randomWrites(q, payload)
		<-q.close()
		if err == nil {
			err = q.failure()
		}
		return err
	})
}

// checkDelivery runs send and reads r to its end: the bytes must be
// payload's, and send must not fail.
func checkDelivery(t *testing.T, r io.Reader, payload []byte, send func() error) {
	t.Helper()
	errs := make(chan error, 1)
	go func() { errs <- send() }()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("got %d bytes that differ from the %d written", len(got), len(payload))
	}
}

// A writer that goes quiet has its last bytes delivered: the peer answers
// each message, which it could not do if the message sat in the queue.
func TestCoalescerFlushesWhenIdle(t *testing.T) {
	d, a := testconn.TCPPair(t)
	q := newCoalescer(d, 1<<20, nil)
	defer q.close()
	go io.Copy(a, a) // echo
	buf := make([]byte, 64)
	for i := range 100 {
		msg := []byte{byte(i), 'k', 'i', 'n'}
		if _, err := q.Write(msg); err != nil {
			t.Fatal(err)
		}
		d.SetReadDeadline(time.Now().Add(20 * time.Second)) // a guard against hanging, not a measurement
		if _, err := io.ReadFull(d, buf[:len(msg)]); err != nil {
			t.Fatalf("message %d was not flushed: %v", i, err)
		}
		if !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("message %d came back as %q", i, buf[:len(msg)])
		}
	}
}

// blockingWriter takes nothing until released, then fails.
type blockingWriter struct {
	release chan struct{}
	started chan struct{}
	once    sync.Once
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return 0, errors.New("the stream broke")
}

// With the queue full, Write honours the write deadline; once the stream
// fails, Write returns its error; close ends the flusher.
func TestCoalescerDeadlineAndFailure(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{}), started: make(chan struct{})}
	var mu sync.Mutex
	expired := make(chan struct{})
	q := newCoalescer(w, 1024, func() <-chan struct{} { mu.Lock(); defer mu.Unlock(); return expired })
	if _, err := q.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	<-w.started // the flusher holds the first batch
	if n, err := q.Write(make([]byte, 1024)); err != nil || n != 1024 {
		t.Fatalf("filling the queue: %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := q.Write([]byte("more"))
		done <- err
	}()
	close(expired) // the deadline passes while Write waits for room
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v", err)
	}
	if _, err := q.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the deadline: %v", err)
	}
	mu.Lock()
	expired = make(chan struct{}) // deadline cleared
	mu.Unlock()
	close(w.release)
	<-q.close()
	if err := q.failure(); err == nil || err.Error() != "the stream broke" {
		t.Fatalf("failure after the stream broke: %v", err)
	}
	if _, err := q.Write([]byte("x")); err == nil || err.Error() != "the stream broke" {
		t.Fatalf("write after the stream broke: %v", err)
	}
}

// On the QUIC lane, many writes of every size followed at once by Close
// arrive whole: Close sends what is queued before the end of the stream.
func TestQUICConnCloseFlushesQueuedWrites(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer a.Close()
	if d.Info().Lane != LaneQUIC {
		t.Fatalf("lane %s, want QUIC", d.Info().Lane)
	}
	payload := make([]byte, 16<<20)
	rand.Read(payload)
	checkDelivery(t, a, payload, func() error {
		defer d.Close()
		return randomWrites(d, payload)
	})
}

// The queue's limit follows the rate batches were taken at, within its
// bounds, and small batches leave it.
func TestCoalescerLimitFollowsRate(t *testing.T) {
	limit := 1 << 20
	// 1 MB taken in 20 ms: 50 MB/s, 100 KB in 2 ms; down at once.
	if limit = adapt(limit, 1e6, 20*time.Millisecond); limit < 95_000 || limit > 110_000 {
		t.Errorf("at 50 MB/s the limit is %d, want about 100 KB", limit)
	}
	// 4 MB in 1 ms: past the top, reached by doubling.
	if got := adapt(limit, 4e6, time.Millisecond); got != 2*limit {
		t.Errorf("one fast batch took the limit from %d to %d, want twice", limit, got)
	}
	for range 7 {
		limit = adapt(limit, 4e6, time.Millisecond)
	}
	if limit < maxQueue*95/100 || limit > maxQueue {
		t.Errorf("at 1 GB/s the limit is %d, want about %d", limit, maxQueue)
	}
	if got := adapt(limit, 1000, time.Second); got != limit {
		t.Errorf("a small batch moved the limit from %d to %d", limit, got)
	}
	// 100 KB in a second: the floor, at once.
	if limit = adapt(limit, 100_000, time.Second); limit != minQueue {
		t.Errorf("at 100 KB/s the limit is %d, want %d", limit, minQueue)
	}
}

// gateWriter takes nothing until open is closed.
type gateWriter struct {
	open chan struct{}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.open

	return len(p), nil
}

// A new queue in front of a stream that does not take bytes yet (a slow
// path) holds little: it must learn the rate before it lets a writer run
// far ahead. It once started at 1 MiB, and a file's first 2 MiB sat
// behind one lossy lane while the other lanes had finished.
func TestCoalescerStartsSmall(t *testing.T) {
	g := &gateWriter{open: make(chan struct{})}
	q := newCoalescer(g, coalesceLimit, nil)
	var accepted atomic.Int64
	go func() {
		piece := make([]byte, 8<<10)
		for range 256 { // 2 MiB
			if _, err := q.Write(piece); err != nil {
				return
			}
			accepted.Add(int64(len(piece)))
		}
	}()
	// Wait until the writer is held (what it got in no longer grows).
	last := int64(-1)
	for last != accepted.Load() {
		last = accepted.Load()
		time.Sleep(50 * time.Millisecond)
	}
	if last > 2*minQueue {
		t.Errorf("a new queue took %d bytes before its stream took any, want at most %d", last, 2*minQueue)
	}
	close(g.open)
	<-q.close()
}
