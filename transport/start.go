package transport

import (
	"context"
	"errors"
	"sync"
	"time"

	"kin/signal"
)

// StartConfig says which signaling server a node registers with, and how
// it connects (Config).
type StartConfig struct {
	Config
	Signal signal.ClientConfig
	// RegisterTimeout bounds the wait for the first registration; 0 means
	// 10 s.
	RegisterTimeout time.Duration
}

// running is what Start adds to a node: the signaling client it owns and
// the goroutines it runs.
type running struct {
	client *signal.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error // the first error that stopped the node
}

// Start registers with the signaling server and runs a node on that
// registration until ctx ends, Close is called, or the server refuses the
// registration for good (then Done closes and Err says why). The node's
// ICE servers are the live ones of the current registration (TURN
// credentials change when the client re-registers) unless cfg sets them.
// The client reconnects by itself after a lost connection.
func Start(ctx context.Context, cfg StartConfig) (*Node, error) {
	ctx, cancel := context.WithCancel(ctx)
	client := signal.NewClient(cfg.Signal)
	if cfg.ICEServers == nil {
		cfg.ICEServers = func() []signal.ICEServer { return client.Registration().ICEServers }
	}
	n := NewNode(client, cfg.Config)
	r := &running{client: client, cancel: cancel, done: make(chan struct{})}
	n.run = r
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.stop(client.Run(ctx))
	}()
	timeout := cfg.RegisterTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	rctx, rcancel := context.WithTimeout(ctx, timeout)
	_, err := client.Ready(rctx)
	rcancel()
	if err != nil {
		cancel()
		wg.Wait()
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, ctx.Err()
		}
		return nil, err // it names the server and what went wrong
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.stop(n.Run(ctx))
	}()
	go func() {
		wg.Wait()
		close(r.done)
	}()
	return n, nil
}

// stop records why the node stopped (the first reason) and stops the rest.
func (r *running) stop(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.cancel()
}

// Registration is the newest registration the signaling server confirmed
// (for a node made by Start; zero otherwise).
func (n *Node) Registration() signal.Registration {
	if n.run == nil {
		return signal.Registration{}
	}
	return n.run.client.Registration()
}

// Done is closed once a node made by Start has stopped.
func (n *Node) Done() <-chan struct{} {
	if n.run == nil {
		return nil
	}
	return n.run.done
}

// Err says why a node made by Start stopped: nil while it runs or after
// Close or the end of its ctx; the signaling server's refusal otherwise.
func (n *Node) Err() error {
	if n.run == nil {
		return nil
	}
	select {
	case <-n.run.done:
	default:
		return nil
	}
	n.run.mu.Lock()
	defer n.run.mu.Unlock()
	if errors.Is(n.run.err, context.Canceled) {
		return nil
	}
	return n.run.err
}

// Close stops a node made by Start: its connections close, the
// registration ends, and Close returns once every goroutine has.
func (n *Node) Close() error {
	if n.run == nil {
		return errors.New("transport: Close is for nodes made by Start")
	}
	n.run.stop(context.Canceled)
	<-n.run.done
	return nil
}
