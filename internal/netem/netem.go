// Package netem emulates a WAN link between two network namespaces in user
// space, for kernels without tc netem (sch_netem): each namespace gets a
// TUN device, and a forwarder in this process carries every IP packet
// from one to the other through a rate limit, a queue, a delay and random
// loss, the way `tc qdisc add ... netem rate R delay D loss P` would on
// both ends. Both TCP (scp) and UDP (kin's WebRTC) cross the same link, so
// they can be compared side by side.
//
// Linux only, and it needs root (namespaces, /dev/net/tun).
package netem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"kin/internal/netns"
)

// Link is what the emulated WAN does to packets. Each direction gets the
// whole rate, half the round trip as delay, and the loss.
type Link struct {
	Rate int64         // bits per second each way; 0 is unlimited
	RTT  time.Duration // round trip, split evenly between the directions
	Loss float64       // fraction of packets dropped at random, each way (0.005 is 0.5%)
}

func (l Link) String() string {
	s := fmt.Sprintf("%s RTT", l.RTT)
	if l.Rate > 0 {
		s = fmt.Sprintf("%s, %s", bitrate(l.Rate), s)
	}
	if l.Loss > 0 {
		s += fmt.Sprintf(", %g%% loss", l.Loss*100)
	}
	return s
}

func bitrate(bps int64) string {
	if bps >= 1e9 && bps%1e9 == 0 {
		return fmt.Sprintf("%d Gbit/s", bps/1e9)
	}
	return fmt.Sprintf("%d Mbit/s", bps/1e6)
}

// queuePackets is how many full-size packets may wait for the link before
// it drops new ones (tail drop), as netem's default limit of 1000.
const queuePackets = 1000

// mtu of both TUN devices: an Ethernet path.
const mtu = 1500

// Side is one end of the link: a network namespace whose only route to
// the other side is its TUN device.
type Side struct {
	NS    string // network namespace name (ip netns)
	Dev   string // the TUN device's name inside it
	Addr  string // its IPv4 address on the link
	Other string // the other side's address

	tun *os.File
}

// Pair is a running link between sides A and B.
type Pair struct {
	A, B *Side

	cancel context.CancelFunc
	done   chan struct{}
}

// Available says why the link cannot be built here, or "" if it can.
func Available() string {
	if runtime.GOOS != "linux" {
		return "needs Linux"
	}
	if os.Geteuid() != 0 {
		return "needs root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs ip (Debian: iproute2)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	return ""
}

// Start builds two namespaces joined by link and forwards packets between
// them until ctx ends or Close is called.
func Start(ctx context.Context, link Link) (_ *Pair, err error) {
	if why := Available(); why != "" {
		return nil, errors.New(why)
	}
	if link.Loss < 0 || link.Loss >= 1 || link.Rate < 0 || link.RTT < 0 {
		return nil, fmt.Errorf("netem: impossible link %+v", link)
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	a := &Side{NS: "kinwan" + id + "a", Dev: "kw" + id + "a", Addr: "10.201.0.1", Other: "10.201.0.2"}
	z := &Side{NS: "kinwan" + id + "b", Dev: "kw" + id + "b", Addr: "10.201.0.2", Other: "10.201.0.1"}
	p := &Pair{A: a, B: z, done: make(chan struct{})}
	defer func() {
		if err != nil {
			p.teardown()
		}
	}()
	for _, s := range []*Side{a, z} {
		if err := s.build(); err != nil {
			return nil, err
		}
	}
	ctx, p.cancel = context.WithCancel(ctx)
	half := link.RTT / 2
	ab := newPipe(a.tun, z.tun, link.Rate, half, link.Loss)
	ba := newPipe(z.tun, a.tun, link.Rate, half, link.Loss)
	go func() {
		stopped := make(chan struct{}, 2)
		go func() { ab.run(ctx); stopped <- struct{}{} }()
		go func() { ba.run(ctx); stopped <- struct{}{} }()
		<-ctx.Done()
		a.tun.Close() // ends the reads
		z.tun.Close()
		<-stopped
		<-stopped
		close(p.done)
	}()
	return p, nil
}

// Close stops forwarding and deletes both namespaces, and with them
// everything left running inside.
func (p *Pair) Close() error {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return p.teardown()
}

func (p *Pair) teardown() error {
	var errs []error
	for _, s := range []*Side{p.A, p.B} {
		if s.tun != nil {
			s.tun.Close()
		}
		if err := netns.Delete(s.NS); err != nil {
			errs = append(errs, fmt.Errorf("netem: %w", err))
		}
	}
	return errors.Join(errs...)
}

// build makes the side's namespace and TUN device, with the other side's
// address as its point-to-point peer.
func (s *Side) build() error {
	if err := ip("netns", "add", s.NS); err != nil {
		return err
	}
	tun, err := openTUN(s.Dev)
	if err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	s.tun = tun
	// The device lives as long as this process holds its file, wherever
	// the interface itself is moved.
	for _, args := range [][]string{
		{"link", "set", s.Dev, "netns", s.NS},
		{"-n", s.NS, "link", "set", "lo", "up"},
		{"-n", s.NS, "link", "set", s.Dev, "mtu", fmt.Sprint(mtu), "up"},
		{"-n", s.NS, "addr", "add", s.Addr, "peer", s.Other + "/32", "dev", s.Dev},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("netem: ip %s: %v %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command runs name with args inside the side's namespace.
func (s *Side) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return netns.Command(ctx, s.NS, name, args...)
}

// Do runs f inside the side's namespace (see netns.Do).
func (s *Side) Do(f func() error) error { return netns.Do(s.NS, f) }
