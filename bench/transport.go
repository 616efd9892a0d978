package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"kin/internal/memsignal"
	"kin/transport"
)

// transportAlone moves size bytes through one kin transport.Conn on the
// given lane (KIN_LANE's values) with no SSH on top, and returns MB/s: the
// ceiling kin's own overhead sits under. Both ends run in this process on
// lo, introduced by an in-memory router.
func transportAlone(ctx context.Context, size int64, lane string) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := memsignal.New()
	if lane == "" {
		lane = "auto"
	}
	cfg := transport.Config{Interfaces: []string{"lo"}, Lane: lane}
	a := transport.NewNode(r.Endpoint("aaaaaaaaaaaaaaaa"), cfg)
	b := transport.NewNode(r.Endpoint("bbbbbbbbbbbbbbbb"), cfg)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, n := range []*transport.Node{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}
	accepted := make(chan *transport.Conn, 1)
	go func() {
		c, err := b.Accept(ctx)
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d, err := a.Dial(ctx, "bbbbbbbbbbbbbbbb")
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer d.Close()
	acc, ok := <-accepted
	if !ok {
		return 0, fmt.Errorf("accept failed")
	}
	defer acc.Close()
	want := transport.LaneQUIC
	if lane == transport.LaneForceDC {
		want = transport.LaneDataChannel
	}
	if got := d.Info().Lane; got != want {
		return 0, fmt.Errorf("the connection runs on the %s, not the %s", got, want)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, acc, size)
		done <- err
	}()
	buf := make([]byte, 32<<10)
	t0 := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := d.Write(buf[:min(int64(len(buf)), size-sent)]); err != nil {
			return 0, fmt.Errorf("write: %w", err)
		}
	}
	if err := <-done; err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	return float64(size) / 1e6 / time.Since(t0).Seconds(), nil
}
