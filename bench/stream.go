package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// startSource serves size pseudo-random bytes to every TCP connection,
// on the host's address and, on loopback, as 127.0.0.1 (what kin share and
// ssh -L forward to).
func startSource(h host, size int64) (net.Listener, error) {
	ip := "127.0.0.1"
	if h.side != nil {
		ip = "0.0.0.0" // in a namespace of its own: only the link reaches it
	}
	ln, err := h.listenOn(ip)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{}).Read(buf)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; {
					n := min(left, int64(len(buf)))
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()
	return ln, nil
}

// measure reads from addr until EOF, as host h, and returns MB/s and the
// bytes read. With a limit, it stops reading after that long and measures
// what came until then.
func measure(ctx context.Context, h host, addr string, want int64, limit time.Duration) (float64, int64, error) {
	start := time.Now()
	c, err := h.dial(ctx, addr, 30*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	deadline, cut := start.Add(5*time.Minute), false
	if limit > 0 {
		deadline, cut = start.Add(limit), true
	}
	c.SetDeadline(deadline)
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if cut && errors.Is(err, os.ErrDeadlineExceeded) && n > 0 {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	el := time.Since(start)
	if n != want && !(cut && n < want && el >= limit) {
		return 0, 0, fmt.Errorf("got %d bytes, want %d", n, want)
	}
	return float64(n) / 1e6 / el.Seconds(), n, nil
}

// firstByte dials addr from h until something listens there and returns
// the time from start until the first byte comes through (at most 30 s).
func firstByte(ctx context.Context, h host, addr string, start time.Time) (time.Duration, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, err := h.dial(ctx, addr, time.Second)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		c.SetReadDeadline(deadline)
		one := make([]byte, 1)
		_, err = io.ReadFull(c, one)
		c.Close()
		if err != nil {
			return 0, fmt.Errorf("first byte through %s: %w", addr, err)
		}
		return time.Since(start), nil
	}
	return 0, fmt.Errorf("nothing came through %s in 30 s", addr)
}

// waitListening waits until something listens at addr, as seen from h.
func waitListening(h host, addr string) error {
	var err error
	for i := 0; i < 100; i++ {
		var c net.Conn
		if c, err = h.dial(context.Background(), addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
