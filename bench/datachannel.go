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

// dataChannel measures one pion data channel with kin's transport
// settings and no SSH on top: the ceiling kin's own overhead sits under.
// Both ends run in this process on lo, introduced by an in-memory router.
func dataChannel(ctx context.Context, size int64, runs int) (*Row, error) {
	row := &Row{Name: "pion data channel (no SSH)"}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := memsignal.New()
	cfg := transport.Config{Interfaces: []string{"lo"}}
	a := transport.NewNode(r.Endpoint("aaaaaaaaaaaaaaaa"), cfg)
	b := transport.NewNode(r.Endpoint("bbbbbbbbbbbbbbbb"), cfg)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, n := range []*transport.Node{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}
	buf := make([]byte, 32<<10)
	for range runs {
		accepted := make(chan *transport.Conn, 1)
		go func() {
			c, err := b.Accept(ctx)
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}()
		start := time.Now()
		d, err := a.Dial(ctx, "bbbbbbbbbbbbbbbb")
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		acc, ok := <-accepted
		if !ok {
			d.Close()
			return nil, fmt.Errorf("accept failed")
		}
		done := make(chan error, 1)
		var first time.Duration
		go func() {
			one := make([]byte, 1)
			if _, err := io.ReadFull(acc, one); err != nil {
				done <- err
				return
			}
			first = time.Since(start)
			_, err := io.CopyN(io.Discard, acc, size-1)
			done <- err
		}()
		t0 := time.Now()
		for sent := int64(0); sent < size; sent += int64(len(buf)) {
			if _, err := d.Write(buf[:min(int64(len(buf)), size-sent)]); err != nil {
				return nil, fmt.Errorf("write: %w", err)
			}
		}
		if err := <-done; err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		row.add(float64(size)/1e6/time.Since(t0).Seconds(), first)
		d.Close()
		acc.Close()
	}
	return row, nil
}
