package netem

import (
	"context"
	"math/rand/v2"
	"os"
	"time"
)

// pipe carries packets one way: read from in, maybe dropped, queued for
// the link's rate, delayed, written to out.
type pipe struct {
	in, out *os.File
	rate    int64 // bits/s, 0 unlimited
	delay   time.Duration
	loss    float64
	rng     *rand.Rand
}

type packet struct {
	data []byte
	due  time.Time
}

func newPipe(in, out *os.File, rate int64, delay time.Duration, loss float64) *pipe {
	return &pipe{in: in, out: out, rate: rate, delay: delay, loss: loss, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// airtime is how long n bytes occupy the link.
func (p *pipe) airtime(n int) time.Duration {
	if p.rate == 0 {
		return 0
	}
	return time.Duration(int64(n) * 8 * int64(time.Second) / p.rate)
}

// run forwards until ctx ends or in is closed.
func (p *pipe) run(ctx context.Context) {
	// The delay line: packets in order of departure, and so of arrival.
	line := make(chan packet, 1<<16)
	go p.deliver(ctx, line)
	defer close(line)
	maxQueue := p.airtime(queuePackets * mtu)
	var free time.Time // when the link has sent everything queued so far
	buf := make([]byte, 1<<16)
	for {
		n, err := p.in.Read(buf)
		if err != nil {
			return
		}
		if p.loss > 0 && p.rng.Float64() < p.loss {
			continue
		}
		now := time.Now()
		start := free
		if start.Before(now) {
			start = now
		}
		if start.Sub(now) > maxQueue {
			continue // the queue is full: tail drop
		}
		free = start.Add(p.airtime(n))
		pkt := packet{data: append([]byte(nil), buf[:n]...), due: free.Add(p.delay)}
		select {
		case line <- pkt:
		default: // more in flight than the line holds: drop
		}
	}
}

// deliver writes each packet to out when it is due.
func (p *pipe) deliver(ctx context.Context, line <-chan packet) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for pkt := range line {
		if d := time.Until(pkt.due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		p.out.Write(pkt.data) // a full TUN queue drops, as a NIC would
	}
}
