//go:build unix

package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkSSHOverConn moves 128 MiB through one SSH channel (x/crypto/ssh,
// kin's default algorithms) over a real peer connection on loopback, as
// kin connect and kin send do, with the transport alone beside it: the
// difference is what SSH over the lane costs; ssh-queue-* fix the write
// queue's size (coalesceLimit; "off": none) where ssh lets it adapt.
// "cores" is the CPU both ends used per second of wall time.
func BenchmarkSSHOverConn(b *testing.B) {
	const size = 128 << 20
	for _, lane := range []string{LaneAuto, LaneForceDC} {
		name := "quic"
		if lane == LaneForceDC {
			name = "datachannel"
		}
		for _, ws := range []int{32 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/raw-%dk", name, ws>>10), func(b *testing.B) {
				d, a := benchPair(b, lane)
				benchMove(b, size, ws, d, a)
			})
		}
		b.Run(name+"/ssh", func(b *testing.B) {
			d, a := benchPair(b, lane)
			snd, rcv := sshChannel(b, d, a)
			benchMove(b, size, 32<<10, snd, rcv)
		})
		if lane == LaneForceDC {
			continue
		}
		b.Run(name+"/ssh-256k", func(b *testing.B) {
			d, a := benchPair(b, lane)
			snd, rcv := sshChannel(b, d, a)
			benchMove(b, size, 256<<10, snd, rcv)
		})
		for _, q := range []struct {
			name  string
			limit int
		}{{"off", 0}, {"256k", 256 << 10}, {"1m", 1 << 20}, {"4m", 4 << 20}} {
			b.Run(name+"/ssh-queue-"+q.name, func(b *testing.B) {
				defer func(l int) { coalesceLimit = l }(coalesceLimit)
				coalesceLimit = q.limit
				d, a := benchPair(b, lane)
				snd, rcv := sshChannel(b, d, a)
				benchMove(b, size, 32<<10, snd, rcv)
			})
		}
	}
}

func benchPair(b *testing.B, lane string) (*Conn, *Conn) {
	cfg := Config{Interfaces: []string{"lo"}, Lane: lane}
	p := newPairWith(b, cfg, cfg)
	d, a := p.connect(b)
	b.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

// sshChannel runs an SSH client on cli and a server on srv and returns
// the two ends of one session channel.
func sshChannel(b *testing.B, cli, srv net.Conn) (io.WriteCloser, io.Reader) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan ssh.Channel, 1)
	go func() {
		cfg := &ssh.ServerConfig{NoClientAuth: true}
		cfg.AddHostKey(signer)
		sc, chans, reqs, err := ssh.NewServerConn(srv, cfg)
		if err != nil {
			close(accepted)
			return
		}
		b.Cleanup(func() { sc.Close() })
		go ssh.DiscardRequests(reqs)
		nc := <-chans
		ch, creqs, err := nc.Accept()
		if err != nil {
			close(accepted)
			return
		}
		go ssh.DiscardRequests(creqs)
		accepted <- ch
	}()
	cc, chans, reqs, err := ssh.NewClientConn(cli, "kin", &ssh.ClientConfig{User: "kin",
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	client := ssh.NewClient(cc, chans, reqs)
	b.Cleanup(func() { client.Close() })
	ch, creqs, err := client.OpenChannel("session", nil)
	if err != nil {
		b.Fatal(err)
	}
	go ssh.DiscardRequests(creqs)
	sch, ok := <-accepted
	if !ok {
		b.Fatal("the server did not accept the channel")
	}
	return ch, sch
}

// benchMove writes size bytes on w in writes of ws bytes (io.Copy's 32
// KiB for SSH channels, as kin's pipes do) and reads them from r into a
// buffer as large, b.N times.
func benchMove(b *testing.B, size int64, ws int, w io.Writer, r io.Reader) {
	buf := make([]byte, ws)
	rand.Read(buf)
	b.SetBytes(size)
	b.ResetTimer()
	ps, _ := w.(interface {
		PathStats() (time.Duration, uint64, uint64, uint64, bool)
	})
	var lost0 uint64
	if ps != nil {
		_, _, lost0, _, _ = ps.PathStats()
	}
	busy0, irq0 := hostBusy(), hostSoftirq()
	cpu0, t0 := cpuTime(), time.Now()
	for it := 0; it < b.N; it++ {
		errs := make(chan error, 1)
		go func() {
			rbuf := make([]byte, ws)
			var err error
			for got, n := int64(0), 0; got < size && err == nil; got += int64(n) {
				n, err = r.Read(rbuf)
			}
			errs <- err
		}()
		for sent := int64(0); sent < size; sent += int64(len(buf)) {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(fmt.Errorf("write: %w", err))
			}
		}
		if err := <-errs; err != nil {
			b.Fatal(fmt.Errorf("read: %w", err))
		}
	}
	el := time.Since(t0)
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(el), "cores")
	b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(size)*float64(b.N)/1e9), "cpu-s/GB")
	// others: the cores the rest of the host used meanwhile. This
	// benchmark is CPU-bound: its "regimes" (about 1 core and 300-400
	// MB/s, or 1.75 cores and 600 MB/s on 2 cores) follow what else runs,
	// cores + others stays near the host's core count.
	b.ReportMetric(float64(hostBusy()-busy0-(cpuTime()-cpu0))/float64(el), "others")
	b.ReportMetric(float64(hostSoftirq()-irq0)/float64(el), "softirq")
	if ps != nil {
		rtt, _, lost, _, _ := ps.PathStats()
		b.ReportMetric(float64(lost-lost0)/float64(b.N), "lost/op")
		b.ReportMetric(float64(rtt.Microseconds()), "srtt-us")
	}
}

// hostBusy is the CPU time all of the host's cores spent busy since boot
// (Linux; 0 elsewhere).
func hostBusy() time.Duration { return hostCPU(true) }

// hostSoftirq is the CPU time the host's cores spent on interrupts and
// softirqs since boot: on loopback, mostly the kernel carrying packets
// (part of it charged to this process, part to ksoftirqd).
func hostSoftirq() time.Duration { return hostCPU(false) }

func hostCPU(procs bool) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 || (!procs && i != 5 && i != 6) { // idle, iowait, steal, guest
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}
