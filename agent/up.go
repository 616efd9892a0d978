package agent

import (
	"context"
	"errors"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"kin/session"
	"kin/signal"
)

// UpConfig is what an agent (kin up) runs.
type UpConfig struct {
	Home string     // the kin home whose control socket it answers
	Peer PeerConfig // how it registers; it takes offers (signal.ModeListen)
	// Server serves friends; its Tickets are filled in: the ports kin
	// share commands ask the agent to serve (Shares).
	Server session.ServerConfig
	Inbox  string // where friends' files land, as Hello tells commands
	// Ready, if set, hears that the agent is registered and about to
	// serve.
	Ready func(*Peer)
}

// Up runs the agent until ctx ends (then nil), or the signaling server
// turns it away for good (a *NodeStopped). The control socket comes
// first, so that a second agent of one home stops at ErrAlreadyRunning
// before it registers and takes connections meant for the first; an
// agent whose socket cannot be made still serves friends (and logs why
// commands of its identity will not use it).
func Up(ctx context.Context, cfg UpConfig) error {
	log := cfg.Peer.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &NodeHandler{}
	cfg.Server.Tickets = h.Shares.Tickets
	srv, err := session.NewServer(cfg.Server)
	if err != nil {
		return err
	}
	ctl, err := Listen(cfg.Home, h, log.With("part", "agent"))
	switch {
	case errors.Is(err, ErrAlreadyRunning):
		return err
	case err != nil:
		log.Warn("no control socket: kin share and kin receive of this identity will compete with this agent", "err", err)
	default:
		defer ctl.Close()
	}
	cfg.Peer.Mode = signal.ModeListen
	p, err := StartPeer(ctx, cfg.Peer)
	if err != nil {
		return err
	}
	defer p.Close()
	h.Node, h.Reply = p.Node, Reply{ID: p.Identity.ID(), Signal: p.URL, Instance: p.Instance, Inbox: cfg.Inbox}

	var g errgroup.Group
	ctx, cancel := context.WithCancel(ctx)
	defer g.Wait()
	defer cancel()
	if ctl != nil {
		g.Go(func() error {
			if err := ctl.Serve(ctx); err != nil {
				log.Error("control socket stopped; kin commands will not use this agent", "err", err)
			}
			return nil
		})
	}
	if cfg.Ready != nil {
		cfg.Ready(p)
	}
	return p.Serve(ctx, srv)
}
