package session

// UDP forwarding: game servers, DNS, WireGuard and other datagram services.
//
// Each local address that sends datagrams (a "mapping", as a NAT would call
// it) gets an SSH channel of its own, of type kin-udp@kin. The channel
// carries datagrams as frames: a 2-byte big-endian length, then the bytes,
// so every datagram arrives whole and alone, never split or merged. The
// serving side opens one UDP socket towards the service per channel, so
// the service sees each client as a separate address, as it would without
// kin. A mapping with no datagram either way for UDPOptions.Idle (120 s by
// default, what Linux conntrack keeps an answered UDP flow for) closes on
// whichever side notices first; the next datagram opens a new one. A
// datagram larger than MaxDatagram is dropped and counted, never split.
//
// Future work: where both ends have the QUIC fast lane, datagrams could
// travel as QUIC datagrams (RFC 9221) instead, without the head-of-line
// blocking of the SSH channel.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

const (
	udpChannel          = "kin-udp@kin"            // one UDP mapping: framed datagrams both ways
	checkUDPPortRequest = "kin-check-udp-port@kin" // may I use this UDP port?
)

// MaxDatagram is the largest datagram kin carries: 16 KiB, more than DNS
// (4 KiB with EDNS), games and VPNs send, which stay under a path's MTU
// of about 1500 bytes. Larger ones are dropped and counted.
const MaxDatagram = 16 << 10

// DefaultUDPIdle is how long a UDP mapping lives with no datagram either way.
const DefaultUDPIdle = 120 * time.Second

// udpQueue is how many datagrams a mapping holds while its channel opens
// or is slow; more are dropped and counted, as a busy network would.
const udpQueue = 64

// maxFrame is the largest frame the 2-byte length can announce.
const maxFrame = 1<<16 - 1

// UDPOptions shape UDP forwarding, on either side.
type UDPOptions struct {
	Idle  time.Duration // a mapping idle this long closes; 0 = DefaultUDPIdle
	Stats *UDPStats     // where to count; nil = not reported
}

func (o UDPOptions) idle() time.Duration {
	if o.Idle <= 0 {
		return DefaultUDPIdle
	}
	return o.Idle
}

func (o UDPOptions) stats() *UDPStats {
	if o.Stats == nil {
		return &UDPStats{}
	}
	return o.Stats
}

// UDPStats counts what UDP forwarding did. Safe for concurrent use.
type UDPStats struct {
	Forwarded atomic.Int64 // datagrams carried (both ways)
	Oversized atomic.Int64 // dropped: larger than MaxDatagram
	Dropped   atomic.Int64 // dropped otherwise: a full queue, a channel that did not open
	Open      atomic.Int64 // mappings open now
	Expired   atomic.Int64 // mappings closed after Idle without a datagram
}

// udpOpen is the kin-udp@kin channel's extra data: where to send, and
// (for logs) from where the datagrams came.
type udpOpen struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

var errOversized = errors.New("datagram larger than MaxDatagram")

// writeDatagram writes d as one frame with a single Write; out is scratch
// space of at least 2+len(d) bytes.
func writeDatagram(w io.Writer, out, d []byte) error {
	if len(d) > maxFrame {
		return errOversized
	}
	binary.BigEndian.PutUint16(out, uint16(len(d)))
	n := copy(out[2:], d)
	_, err := w.Write(out[:2+n])
	return err
}

// readDatagram reads one frame into buf (at least maxFrame bytes) and
// returns its datagram. A frame larger than MaxDatagram is read whole (the
// stream stays in step) and reported as errOversized. A stream that ends
// between frames gives io.EOF; inside one, io.ErrUnexpectedEOF.
func readDatagram(r *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if n > MaxDatagram {
		return nil, errOversized
	}
	return buf[:n], nil
}

// transientUDPError reports an error a UDP socket gives for an earlier
// datagram (ICMP port unreachable: nothing listened there then). The
// socket still works.
func transientUDPError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// logOversized reports the nth datagram dropped for its size: the first,
// second, fourth, eighth..., so that a flood does not flood the log.
func logOversized(log *slog.Logger, n int64, args ...any) {
	if n&(n-1) == 0 {
		log.Warn("dropped a UDP datagram too large to carry", append(args, "max_bytes", MaxDatagram, "dropped_so_far", n)...)
	}
}

// idleTimer tells when a mapping has carried nothing for a while.
type idleTimer struct {
	start time.Time
	last  atomic.Int64 // time.Since(start) at the last datagram
	d     time.Duration
}

func newIdleTimer(d time.Duration) *idleTimer { return &idleTimer{start: time.Now(), d: d} }

func (t *idleTimer) touch() { t.last.Store(int64(time.Since(t.start))) }

// wait returns true once nothing was carried for d, false if done closes first.
func (t *idleTimer) wait(done <-chan struct{}) bool {
	tm := time.NewTimer(t.d)
	defer tm.Stop()
	for {
		select {
		case <-done:
			return false
		case <-tm.C:
			left := t.d - (time.Since(t.start) - time.Duration(t.last.Load()))
			if left <= 0 {
				return true
			}
			tm.Reset(left)
		}
	}
}

// --- serving side ---

func (s *Server) udpPortAllowed(g *Grant, port int) bool {
	_, exposed := s.cfg.UDPPorts[port]
	return (exposed || s.cfg.AnyPort) && g.Perms.AllowsUDPPort(port)
}

// udpAddress is where datagrams for a forwarded UDP port are sent: IPv4
// loopback unless the config says otherwise (a UDP socket cannot try
// ::1 and then 127.0.0.1 as a TCP dial does).
func (s *Server) udpAddress(port int) string {
	if a, ok := s.cfg.UDPPorts[port]; ok {
		return a
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func (s *Server) checkUDPPort(g *Grant, req *ssh.Request, log *slog.Logger) {
	var m portMsg
	ok := ssh.Unmarshal(req.Payload, &m) == nil && s.udpPortAllowed(g, int(m.Port))
	if !ok {
		log.Warn("refused port", "port", keys.FormatPort(int(m.Port), true))
	}
	req.Reply(ok, nil)
}

// forwardUDP serves one kin-udp@kin channel: one client mapping, with an
// upstream UDP socket of its own.
func (s *Server) forwardUDP(ctx context.Context, g *Grant, nc ssh.NewChannel, log *slog.Logger) {
	var d udpOpen
	if err := ssh.Unmarshal(nc.ExtraData(), &d); err != nil {
		nc.Reject(ssh.ConnectionFailed, "malformed request")
		return
	}
	port := int(d.Port)
	name := keys.FormatPort(port, true)
	switch {
	case d.Host != "localhost" && d.Host != "127.0.0.1" && d.Host != "::1":
		log.Warn("refused port", "host", d.Host, "port", name, "why", "only this machine's ports")
		nc.Reject(ssh.Prohibited, "only ports on this machine can be reached")
		return
	case !s.udpPortAllowed(g, port):
		log.Warn("refused port", "port", name)
		nc.Reject(ssh.Prohibited, "port "+name+" is not open to you")
		return
	}
	raddr, err := net.ResolveUDPAddr("udp", s.udpAddress(port))
	var up *net.UDPConn
	if err == nil {
		up, err = net.DialUDP("udp", nil, raddr)
	}
	if err != nil {
		log.Warn("cannot send to the local UDP service", "port", name, "err", err)
		nc.Reject(ssh.ConnectionFailed, "cannot send to port "+name+" there")
		return
	}
	ch := acceptData(nc)
	if ch == nil {
		up.Close()
		return
	}
	log = log.With("port", name, "client", net.JoinHostPort(d.OriginHost, strconv.Itoa(int(d.OriginPort))))
	log.Info("UDP port forward opened", "upstream", up.LocalAddr())
	start := time.Now()
	relayUDP(ctx, ch, up, s.cfg.UDP, log)
	log.Info("UDP port forward closed", "after", time.Since(start).Round(time.Millisecond))
}

// relayUDP carries datagrams between ch and the connected socket up until
// either ends, ctx does, or nothing moves for the idle time. Both close.
func relayUDP(ctx context.Context, ch ssh.Channel, up *net.UDPConn, o UDPOptions, log *slog.Logger) {
	st := o.stats()
	st.Open.Add(1)
	defer st.Open.Add(-1)
	done := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			ch.Close()
			up.Close()
		})
	}
	defer context.AfterFunc(ctx, stop)()
	idle := newIdleTimer(o.idle())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop() // before wg.Wait: it ends the goroutines
	wg.Add(2)
	go func() {
		defer wg.Done()
		if idle.wait(done) {
			st.Expired.Add(1)
			log.Debug("UDP mapping expired", "idle", o.idle())
			stop()
		}
	}()
	go func() { // service -> peer
		defer wg.Done()
		defer stop()
		buf := make([]byte, MaxDatagram+1)
		out := make([]byte, 2+MaxDatagram)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if transientUDPError(err) {
					continue
				}
				return
			}
			if n > MaxDatagram {
				logOversized(log, st.Oversized.Add(1), "from", "the service")
				continue
			}
			idle.touch()
			if err := writeDatagram(ch, out, buf[:n]); err != nil {
				return
			}
			st.Forwarded.Add(1)
		}
	}()
	// peer -> service
	fromPeer(ch, st, idle.touch, func(d []byte) error { _, err := up.Write(d); return err })
}

// fromPeer reads the datagrams the peer sends on ch and delivers each,
// until ch ends or delivering fails for more than a moment.
func fromPeer(ch io.Reader, st *UDPStats, touch func(), deliver func([]byte) error) {
	r := bufio.NewReader(ch)
	buf := make([]byte, maxFrame)
	for {
		d, err := readDatagram(r, buf)
		if errors.Is(err, errOversized) {
			st.Oversized.Add(1)
			continue
		}
		if err != nil {
			return
		}
		touch()
		if err := deliver(d); err != nil && !transientUDPError(err) {
			return
		}
		st.Forwarded.Add(1)
	}
}

// --- client side ---

// CheckUDPPort asks whether the peer lets us use UDP port port.
func (c *Client) CheckUDPPort(ctx context.Context, port int) error {
	ok, _, err := c.ssh.SendRequest(checkUDPPortRequest, true, ssh.Marshal(portMsg{uint32(port)}))
	if err != nil {
		return fmt.Errorf("ask about port %d/udp: %w", port, err)
	}
	if !ok {
		return fmt.Errorf("%w: the peer does not allow you port %d/udp (or does not share it)", ErrPortNotAllowed, port)
	}
	return nil
}

// udpMapping is one local address's datagrams to the peer's port.
type udpMapping struct {
	from   netip.AddrPort
	queue  chan []byte
	ctx    context.Context
	cancel context.CancelFunc
}

// ForwardUDP serves pc: the datagrams each local address sends go to the
// peer's UDP port over a channel of their own, and the replies come back
// to that address. It returns nil when ctx ends and an error when the SSH
// connection does. pc stays open (the caller closes it), so that the same
// local port can serve a new connection.
func (c *Client) ForwardUDP(ctx context.Context, pc *net.UDPConn, port int, o UDPOptions) error {
	st := o.stats()
	lost := make(chan error, 1)
	go func() { lost <- c.ssh.Wait() }()

	// Ending: ctx or the connection unblocks the read with a deadline,
	// which is cleared again when we return.
	var (
		deadlineMu sync.Mutex
		returned   bool
		stopped    bool
	)
	stopErr := make(chan error, 1)
	go func() {
		var err error
		select {
		case <-ctx.Done():
		case err = <-lost:
			if err == nil {
				err = errConnectionClosed
			}
		}
		deadlineMu.Lock()
		defer deadlineMu.Unlock()
		if !returned {
			stopped = true
			stopErr <- err
			pc.SetReadDeadline(time.Unix(1, 0))
		}
	}()
	defer func() {
		deadlineMu.Lock()
		returned = true
		pc.SetReadDeadline(time.Time{})
		deadlineMu.Unlock()
	}()

	var mu sync.Mutex
	maps := map[netip.AddrPort]*udpMapping{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		mu.Lock()
		for _, m := range maps {
			m.cancel()
		}
		mu.Unlock()
	}()
	buf := make([]byte, MaxDatagram+1)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			deadlineMu.Lock()
			s := stopped
			deadlineMu.Unlock()
			if s {
				if ctx.Err() != nil {
					return nil
				}
				return <-stopErr
			}
			if transientUDPError(err) {
				continue
			}
			return fmt.Errorf("read UDP: %w", err)
		}
		if n > MaxDatagram {
			logOversized(c.log, st.Oversized.Add(1), "from", from)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		mu.Lock()
		m := maps[from]
		if m == nil {
			m = &udpMapping{from: from, queue: make(chan []byte, udpQueue)}
			m.ctx, m.cancel = context.WithCancel(ctx)
			maps[from] = m
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.runMapping(m, pc, port, o.idle(), st, func() {
					mu.Lock()
					if maps[from] == m {
						delete(maps, from)
					}
					mu.Unlock()
				})
			}()
		}
		select {
		case m.queue <- append([]byte(nil), buf[:n]...):
		default:
			st.Dropped.Add(1)
		}
		mu.Unlock()
	}
}

// runMapping opens m's channel and carries its datagrams until the
// channel ends, m is cancelled, or nothing moves for idle. Then it calls
// remove, after which no datagram is queued for m.
func (c *Client) runMapping(m *udpMapping, pc *net.UDPConn, port int, idle time.Duration, st *UDPStats, remove func()) {
	defer m.cancel()
	defer func() { // what was queued for a channel that is gone
		remove()
		for {
			select {
			case <-m.queue:
				st.Dropped.Add(1)
			default:
				return
			}
		}
	}()
	open := udpOpen{Host: "localhost", Port: uint32(port), OriginHost: m.from.Addr().String(), OriginPort: uint32(m.from.Port())}
	ch, reqs, err := c.ssh.OpenChannel(udpChannel, ssh.Marshal(open))
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.UnknownChannelType {
			err = errors.New("the peer's kin is too old for UDP")
		}
		c.log.Warn("forwarded UDP failed", "port", keys.FormatPort(port, true), "from", m.from, "err", err)
		return
	}
	go ssh.DiscardRequests(reqs)
	st.Open.Add(1)
	defer st.Open.Add(-1)
	stopClose := context.AfterFunc(m.ctx, func() { ch.Close() })
	defer stopClose()
	defer ch.Close()

	timer := newIdleTimer(idle)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer m.cancel() // before wg.Wait: the goroutines below end with m.ctx
	wg.Add(2)
	go func() {
		defer wg.Done()
		if timer.wait(m.ctx.Done()) {
			st.Expired.Add(1)
			c.log.Debug("UDP mapping expired", "from", m.from, "idle", idle)
			m.cancel()
		}
	}()
	go func() { // local -> peer
		defer wg.Done()
		out := make([]byte, 2+MaxDatagram)
		for {
			select {
			case <-m.ctx.Done():
				return
			case d := <-m.queue:
				timer.touch()
				if err := writeDatagram(ch, out, d); err != nil {
					st.Dropped.Add(1)
					m.cancel()
					return
				}
				st.Forwarded.Add(1)
			}
		}
	}()
	// peer -> local
	fromPeer(ch, st, timer.touch, func(d []byte) error { _, err := pc.WriteToUDPAddrPort(d, m.from); return err })
}
