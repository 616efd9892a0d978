package session

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// udpEcho is a UDP service that answers every datagram with itself. To
// "big" it answers with a datagram larger than kin carries, then "small".
// It notes from which address each client (the text before ':') came.
type udpEcho struct {
	pc   *net.UDPConn
	port int
	mu   sync.Mutex
	from map[string]map[string]bool // client tag -> source addresses
}

func newUDPEcho(t testing.TB) *udpEcho {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{pc: pc, port: pc.LocalAddr().(*net.UDPAddr).Port, from: map[string]map[string]bool{}}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			d := buf[:n]
			if tag, _, ok := bytes.Cut(d, []byte(":")); ok {
				e.mu.Lock()
				if e.from[string(tag)] == nil {
					e.from[string(tag)] = map[string]bool{}
				}
				e.from[string(tag)][from.String()] = true
				e.mu.Unlock()
			}
			if string(d) == "big" {
				pc.WriteToUDP(make([]byte, MaxDatagram+100), from)
				pc.WriteToUDP([]byte("small"), from)
				continue
			}
			pc.WriteToUDP(d, from)
		}
	}()
	return e
}

// sources returns the addresses the service saw client tag come from.
func (e *udpEcho) sources(tag string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for a := range e.from[tag] {
		out = append(out, a)
	}
	return out
}

// udpForward runs c.ForwardUDP on a fresh loopback socket and returns its
// address; it stops when the test ends.
func udpForward(t *testing.T, c *Client, port int, o UDPOptions) *net.UDPAddr {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ForwardUDP(ctx, pc, port, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ForwardUDP after cancel: %v", err)
		}
		pc.Close()
	})
	return pc.LocalAddr().(*net.UDPAddr)
}

// udpClient is a local application's socket talking to the forwarder.
func udpClient(t *testing.T, to *net.UDPAddr) *net.UDPConn {
	c, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends d and returns the next datagram that comes back.
func roundTrip(t *testing.T, c *net.UDPConn, d []byte) []byte {
	t.Helper()
	if _, err := c.Write(d); err != nil {
		t.Fatal(err)
	}
	return recv(t, c)
}

func recv(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard, not a timing assertion
	buf := make([]byte, 1<<16)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no datagram came back: %v", err)
	}
	return buf[:n]
}

// waitUntil waits for cond, which events elsewhere make true.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func udpTicketEnv(t *testing.T, port int, o UDPOptions) (*env, []byte) {
	secret := keys.NewSecret()
	e := newEnv(t, ServerConfig{
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{UDPPorts: []int{port}}, keys.SecretEqual(s, secret)
		},
		UDPPorts: map[int]string{port: "127.0.0.1:" + strconv.Itoa(port)},
		UDP:      o,
	})
	return e, secret
}

func TestUDPForwardKeepsDatagramsAndClientsApart(t *testing.T) {
	echo := newUDPEcho(t)
	var srvStats, cliStats UDPStats
	e, secret := udpTicketEnv(t, echo.port, UDPOptions{Stats: &srvStats})
	c, err := e.dial(ident(t), secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckUDPPort(e.ctx, echo.port); err != nil {
		t.Fatal(err)
	}
	local := udpForward(t, c, echo.port, UDPOptions{Stats: &cliStats})

	// Several clients at once, each with datagrams of many sizes sent in
	// a burst: each comes back whole, alone, in order, to its sender.
	sizes := []int{0, 1, 7, 100, 1200, 1500, 4096, 9000, MaxDatagram}
	const clients = 4
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := udpClient(t, local)
			var sent [][]byte
			for _, n := range sizes {
				d := make([]byte, n)
				rand.Read(d)
				if n >= 4 {
					copy(d, fmt.Sprintf("c%d:", i))
				}
				sent = append(sent, d)
				if _, err := app.Write(d); err != nil {
					t.Error(err)
					return
				}
			}
			for j, d := range sent {
				if got := recv(t, app); !bytes.Equal(got, d) {
					t.Errorf("client %d datagram %d: got %d bytes, sent %d (or different bytes)", i, j, len(got), len(d))
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// The service saw each client from an address of its own.
	seen := map[string]bool{}
	for i := 0; i < clients; i++ {
		src := echo.sources(fmt.Sprintf("c%d", i))
		if len(src) != 1 || seen[src[0]] {
			t.Fatalf("client %d reached the service from %v (others: %v)", i, src, seen)
		}
		seen[src[0]] = true
	}
	if got := srvStats.Open.Load(); got != clients {
		t.Errorf("%d upstream mappings open, want %d", got, clients)
	}

	// Too large to carry, from the local application: dropped and
	// counted, and the next datagram is the next one through.
	app := udpClient(t, local)
	if _, err := app.Write(make([]byte, MaxDatagram+1)); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, app, []byte("after")); string(got) != "after" {
		t.Fatalf("after an oversized datagram: got %d bytes %q", len(got), got[:min(len(got), 16)])
	}
	if cliStats.Oversized.Load() != 1 {
		t.Errorf("client counted %d oversized, want 1", cliStats.Oversized.Load())
	}
	// Too large, from the service: dropped there, and counted.
	if got := roundTrip(t, app, []byte("big")); string(got) != "small" {
		t.Fatalf("after an oversized reply: got %d bytes", len(got))
	}
	if srvStats.Oversized.Load() != 1 {
		t.Errorf("server counted %d oversized, want 1", srvStats.Oversized.Load())
	}
	if cliStats.Dropped.Load() != 0 || srvStats.Dropped.Load() != 0 {
		t.Errorf("dropped: client %d, server %d", cliStats.Dropped.Load(), srvStats.Dropped.Load())
	}
}

// Idle mappings expire on whichever side has the shorter idle time; the
// next datagram opens a new mapping (a new upstream socket).
func TestUDPIdleMappingsExpire(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			echo := newUDPEcho(t)
			short := UDPOptions{Idle: 50 * time.Millisecond}
			var srvStats, cliStats UDPStats
			srvOpt, cliOpt := UDPOptions{Stats: &srvStats}, UDPOptions{Stats: &cliStats}
			expiring := &cliStats
			if side == "client" {
				cliOpt.Idle = short.Idle
			} else {
				srvOpt.Idle = short.Idle
				expiring = &srvStats
			}
			e, secret := udpTicketEnv(t, echo.port, srvOpt)
			c, err := e.dial(ident(t), secret)
			if err != nil {
				t.Fatal(err)
			}
			local := udpForward(t, c, echo.port, cliOpt)
			app := udpClient(t, local)
			if got := roundTrip(t, app, []byte("x:1")); string(got) != "x:1" {
				t.Fatalf("got %q", got)
			}
			waitUntil(t, "the mapping expires on the "+side, func() bool { return expiring.Expired.Load() == 1 })
			waitUntil(t, "both ends close the mapping", func() bool { return srvStats.Open.Load() == 0 && cliStats.Open.Load() == 0 })
			if got := roundTrip(t, app, []byte("x:2")); string(got) != "x:2" {
				t.Fatalf("after expiry: got %q", got)
			}
			if src := echo.sources("x"); len(src) != 2 {
				t.Fatalf("the service saw the client from %v, want two addresses (a new mapping after expiry)", src)
			}
		})
	}
}

func TestUDPRefusals(t *testing.T) {
	echo := newUDPEcho(t)
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends:  friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{echo.port}, UDPPorts: []int{9}}}),
		Ports:    map[int]string{echo.port: "127.0.0.1:1", 9: "127.0.0.1:9"},
		UDPPorts: map[int]string{echo.port: "127.0.0.1:" + strconv.Itoa(echo.port), 9: "127.0.0.1:9"},
	})
	c, err := e.dial(bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	// TCP port N does not allow UDP port N, and the other way round.
	if err := c.CheckUDPPort(e.ctx, echo.port); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("UDP port allowed only for TCP: %v", err)
	}
	if err := c.CheckPort(e.ctx, 9); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("TCP port allowed only for UDP: %v", err)
	}
	if err := c.CheckUDPPort(e.ctx, 9); err != nil {
		t.Errorf("UDP port 9: %v", err)
	}
	// A channel for a port not granted, or another host, is refused.
	for _, o := range []udpOpen{{Host: "localhost", Port: uint32(echo.port)}, {Host: "192.0.2.1", Port: 9}, {Host: "127.0.0.2", Port: 9}} {
		_, _, err := c.ssh.OpenChannel(udpChannel, ssh.Marshal(o))
		var oe *ssh.OpenChannelError
		if !errors.As(err, &oe) || oe.Reason != ssh.Prohibited {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// Datagrams for a refused port are dropped and counted; the local
	// socket keeps working.
	var st UDPStats
	local := udpForward(t, c, echo.port, UDPOptions{Stats: &st})
	app := udpClient(t, local)
	app.Write([]byte("x:1"))
	waitUntil(t, "the datagram is dropped", func() bool { return st.Dropped.Load() == 1 })
	if src := echo.sources("x"); len(src) != 0 {
		t.Fatalf("a refused datagram reached the service from %v", src)
	}
}

// The forwarder returns an error when the connection ends, and leaves its
// socket open for the caller to reuse.
func TestUDPForwardEndsWithTheConnection(t *testing.T) {
	echo := newUDPEcho(t)
	e, secret := udpTicketEnv(t, echo.port, UDPOptions{})
	c, err := e.dial(ident(t), secret)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	done := make(chan error, 1)
	go func() { done <- c.ForwardUDP(context.Background(), pc, echo.port, UDPOptions{}) }()
	app := udpClient(t, pc.LocalAddr().(*net.UDPAddr))
	if got := roundTrip(t, app, []byte("x:1")); string(got) != "x:1" {
		t.Fatalf("got %q", got)
	}
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("ForwardUDP returned nil when the connection ended")
	}
	// Still open, with no deadline left behind.
	app.Write([]byte("still"))
	pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 64)
	if n, _, err := pc.ReadFromUDP(buf); err != nil || string(buf[:n]) != "still" {
		t.Fatalf("socket after ForwardUDP: %q %v", buf[:n], err)
	}
}

// FuzzReadDatagram checks the frame reader against a model of the format:
// 2-byte big-endian length, then that many bytes.
func FuzzReadDatagram(f *testing.F) {
	var b bytes.Buffer
	out := make([]byte, 2+MaxDatagram+10)
	for _, d := range [][]byte{nil, []byte("hello"), make([]byte, MaxDatagram), make([]byte, MaxDatagram+1)} {
		writeDatagram(&b, out, d)
	}
	f.Add(b.Bytes())
	f.Add([]byte{0})
	f.Add([]byte{0, 5, 'a'})
	f.Add([]byte{0xff, 0xff})
	buf := make([]byte, maxFrame)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		pos := 0
		for {
			d, err := readDatagram(r, buf)
			left := len(data) - pos
			switch {
			case left == 0:
				if err != io.EOF {
					t.Fatalf("at the end: %v", err)
				}
				return
			case left < 2:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("half a length: %v", err)
				}
				return
			}
			n := int(binary.BigEndian.Uint16(data[pos:]))
			switch {
			case left < 2+n:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("cut frame: %v", err)
				}
				return
			case n > MaxDatagram:
				if !errors.Is(err, errOversized) {
					t.Fatalf("oversized frame of %d: %v", n, err)
				}
			default:
				if err != nil || !bytes.Equal(d, data[pos+2:pos+2+n]) {
					t.Fatalf("frame of %d: %v", n, err)
				}
				var w bytes.Buffer
				if writeDatagram(&w, out, d) != nil || !bytes.Equal(w.Bytes(), data[pos:pos+2+n]) {
					t.Fatal("frame does not write back the same")
				}
			}
			pos += 2 + n
		}
	})
}
