package netem

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"kin/internal/netlab"
)

func start(t *testing.T, link Link) *Pair {
	t.Helper()
	netlab.Require(t, Available())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	p, err := Start(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// TestTCPThroughLink sends bytes over TCP from A to B and checks they
// arrive whole, no sooner than the link's round trip and rate allow.
func TestTCPThroughLink(t *testing.T) {
	link := Link{Rate: 20e6, RTT: 40 * time.Millisecond}
	p := start(t, link)
	var ln net.Listener
	if err := p.B.Do(func() (err error) { ln, err = net.Listen("tcp", p.B.Addr+":0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 4 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	var c net.Conn
	began := time.Now()
	if err := p.A.Do(func() (err error) { c, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(began); rtt < link.RTT {
		t.Errorf("TCP handshake took %v, less than the link's round trip %v", rtt, link.RTT)
	}
	began = time.Now()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if <-got != sha256.Sum256(payload) {
		t.Fatal("the bytes that crossed the link differ from those sent")
	}
	// At 20 Mbit/s, 4 MiB (plus headers) needs at least 1.67 s on the wire.
	if el, least := time.Since(began), time.Duration(size*8/link.Rate)*time.Second; el < least*9/10 {
		t.Errorf("4 MiB crossed a 20 Mbit/s link in %v: the rate limit does not hold (at least %v)", el, least)
	}
}

// TestLoss sends UDP datagrams over a link that drops half of them.
func TestLoss(t *testing.T) {
	p := start(t, Link{Loss: 0.5})
	var rx, tx net.PacketConn
	if err := p.B.Do(func() (err error) { rx, err = net.ListenPacket("udp4", p.B.Addr+":0"); return }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := p.A.Do(func() (err error) { tx, err = net.ListenPacket("udp4", p.A.Addr+":0"); return }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const sent = 2000
	counted := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 64)
		for {
			rx.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := rx.ReadFrom(buf); err != nil {
				counted <- n
				return
			}
			n++
		}
	}()
	for i := range sent {
		if _, err := tx.WriteTo([]byte{byte(i)}, rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // stay under the receive buffer
		}
	}
	n := <-counted
	if n < sent*35/100 || n > sent*65/100 {
		t.Errorf("%d of %d datagrams arrived over a link with 50%% loss", n, sent)
	}
	t.Logf("%d of %d datagrams arrived", n, sent)
}

func TestImpossibleLink(t *testing.T) {
	if Available() != "" {
		t.Skip(Available())
	}
	for _, link := range []Link{{Loss: 1}, {Loss: -0.1}, {Rate: -1}, {RTT: -time.Second}} {
		if p, err := Start(context.Background(), link); err == nil {
			p.Close()
			t.Errorf("Start(%+v) made a link", link)
		}
	}
}

func TestLinkString(t *testing.T) {
	for link, want := range map[Link]string{
		{Rate: 100e6, RTT: 40 * time.Millisecond, Loss: 0.005}: "100 Mbit/s, 40ms RTT, 0.5% loss",
		{Rate: 1e9, RTT: 10 * time.Millisecond}:                "1 Gbit/s, 10ms RTT",
	} {
		if got := link.String(); got != want {
			t.Errorf("%+v: %q, want %q", link, got, want)
		}
	}
}

// BenchmarkTCP measures what the forwarder itself can carry: TCP over a
// link with no rate limit, delay or loss.
func BenchmarkTCP(b *testing.B) {
	for _, link := range []Link{{}, {Rate: 1e9, RTT: 10 * time.Millisecond}} {
		b.Run(link.String(), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p, err := Start(ctx, link)
			if err != nil {
				b.Skip(err)
			}
			defer p.Close()
			var ln net.Listener
			if err := p.B.Do(func() (err error) { ln, err = net.Listen("tcp", p.B.Addr+":0"); return }); err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					io.Copy(io.Discard, c)
					c.Close()
				}
			}()
			var c net.Conn
			if err := p.A.Do(func() (err error) { c, err = net.Dial("tcp", ln.Addr().String()); return }); err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
