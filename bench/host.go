package main

import (
	"context"
	"net"
	"os/exec"
	"time"

	"kin/internal/netem"
)

// host is where one end of a measured path runs: this machine's own
// loopback, or one side of an emulated WAN (its own network namespace).
type host struct {
	side *netem.Side // nil: here, on loopback
}

// ip is the address the host listens on and is reached at.
func (h host) ip() string {
	if h.side == nil {
		return "127.0.0.1"
	}
	return h.side.Addr
}

// iface is the one interface kin may gather ICE candidates on.
func (h host) iface() string {
	if h.side == nil {
		return "lo"
	}
	return h.side.Dev
}

func (h host) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if h.side == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return h.side.Command(ctx, name, args...)
}

// do runs f where the host's sockets live.
func (h host) do(f func() error) error {
	if h.side == nil {
		return f()
	}
	return h.side.Do(f)
}

func (h host) listen() (net.Listener, error) { return h.listenOn(h.ip()) }

// listenOn listens on a new port at ip, as seen from the host.
func (h host) listenOn(ip string) (ln net.Listener, err error) {
	err = h.do(func() error { ln, err = net.Listen("tcp", ip+":0"); return err })
	return ln, err
}

func (h host) dial(ctx context.Context, addr string, timeout time.Duration) (c net.Conn, err error) {
	err = h.do(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// freePort returns a TCP port nobody listens on at the host's address.
func (h host) freePort() int {
	ln, err := h.listen()
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// udpDrops returns the host's count of UDP datagrams dropped for a full
// receive buffer (see udpDrops).
func (h host) udpDrops() (n int64) {
	h.do(func() error { n, _ = udpDrops(); return nil })
	return n
}
