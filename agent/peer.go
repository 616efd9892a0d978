package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport"
)

// PeerConfig says how a Peer registers.
type PeerConfig struct {
	Identity *keys.Identity
	// Signal is the signaling server's URL. "" runs a built-in one on
	// this machine (signal.ListenLocal) for as long as the Peer; the
	// Peer's URL then says where.
	Signal string
	// Mode says which offers the registration takes (signal.ModeListen,
	// ModeDial, ModeTicket).
	Mode string
	// Interfaces are the network interfaces ICE may use (nil: all).
	Interfaces []string
	// RegisterTimeout bounds the wait for the first registration; 0
	// means 10 s.
	RegisterTimeout time.Duration
	Logger          *slog.Logger
}

// Peer is this machine on the kin network as one identity: a transport
// node registered with a signaling server, ready to dial peers and to
// serve them sessions. Close stops it.
type Peer struct {
	Identity *keys.Identity
	URL      string // the signaling server's
	Instance string // this registration's name; tickets it serves carry it
	Node     *transport.Node
	log      *slog.Logger

	builtin *builtinSignal // nil on a configured signaling server
}

// ErrBuiltinSignal says the built-in signaling server failed, which ends
// the Peer that registered with it.
var ErrBuiltinSignal = errors.New("the built-in signaling server failed")

// builtinSignal is a signaling server a Peer runs for itself.
type builtinSignal struct {
	stop context.CancelFunc
	done chan struct{}
	err  error // why it failed; read after done
}

// StartPeer registers cfg.Identity with the signaling server and runs a
// transport node on that registration until Close is called, ctx ends,
// or the server refuses the registration for good (then Serve says so).
// An error from registering names the server.
func StartPeer(ctx context.Context, cfg PeerConfig) (*Peer, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Peer{Identity: cfg.Identity, URL: cfg.Signal, Instance: newInstance(), log: log}
	nodeCtx := ctx
	if p.URL == "" {
		var err error
		if nodeCtx, err = p.runBuiltinSignal(ctx, cfg.Interfaces); err != nil {
			return nil, err
		}
	}
	url := p.URL
	node, err := transport.Start(nodeCtx, transport.StartConfig{
		Config: transport.Config{Interfaces: cfg.Interfaces, Logger: log.With("part", "transport")},
		Signal: signal.ClientConfig{
			URL: url, Signer: cfg.Identity.Signer, Mode: cfg.Mode, Instance: p.Instance, Logger: log.With("part", "signal"),
			Lost:     func(err error) { log.Info("lost the signaling server; reconnecting", "signal", url, "err", err) },
			Regained: func(signal.Registration) { log.Info("registered with the signaling server again", "signal", url) },
		},
		RegisterTimeout: cfg.RegisterTimeout,
	})
	if err != nil {
		if berr := p.stopBuiltinSignal(); berr != nil {
			return nil, berr
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, signal.ErrUnreachable) { // that one names the server already
			err = fmt.Errorf("signaling server %s: %w", url, err)
		}
		return nil, err
	}
	p.Node = node
	log.Debug("registered", "id", cfg.Identity.ID(), "signal", url, "ice_servers", len(node.Registration().ICEServers))
	return p, nil
}

// runBuiltinSignal starts a signaling server on this machine for p and
// returns the ctx p's node runs under: it ends when the server fails.
func (p *Peer) runBuiltinSignal(ctx context.Context, interfaces []string) (context.Context, error) {
	ln, url, err := signal.ListenLocal(interfaces)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBuiltinSignal, err)
	}
	p.URL = url
	p.log.Debug("built-in signaling server", "listen", ln.Addr(), "url", url)
	ctx, cancel := context.WithCancel(ctx)
	b := &builtinSignal{stop: cancel, done: make(chan struct{})}
	p.builtin = b
	go func() {
		err := signal.NewServer(signal.ServerConfig{Logger: p.log.With("part", "signal-server")}).Serve(ctx, ln)
		if err != nil {
			b.err = fmt.Errorf("%w: %w", ErrBuiltinSignal, err)
		}
		close(b.done)
		if err != nil {
			cancel() // the node with it, once ServeUntil can tell why
		}
	}()
	return ctx, nil
}

// stopBuiltinSignal stops p's built-in signaling server, if it runs one,
// and returns why it failed before (nil if it did not).
func (p *Peer) stopBuiltinSignal() error {
	if p.builtin == nil {
		return nil
	}
	p.builtin.stop()
	<-p.builtin.done
	return p.builtin.err
}

// Close stops the node, and the built-in signaling server if p runs one;
// it returns once they have stopped.
func (p *Peer) Close() {
	p.Node.Close()
	p.stopBuiltinSignal()
}

// newInstance names one registration with the signaling server.
func newInstance() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NodeStopped is what Serve returns when the node stopped under it: the
// signaling server turned this peer away, for the reason Err gives.
type NodeStopped struct {
	URL string // the signaling server's
	Err error
}

func (e *NodeStopped) Error() string { return "signaling server " + e.URL + ": " + e.Err.Error() }
func (e *NodeStopped) Unwrap() error { return e.Err }

// Serve serves every peer connection with srv until ctx ends (then nil),
// or the node stops: then it says why (a *NodeStopped, or
// ErrBuiltinSignal).
func (p *Peer) Serve(ctx context.Context, srv *session.Server) error {
	return p.ServeUntil(ctx, ctx, srv)
}

// ServeUntil is Serve taking connections only until accepting ends; those
// taken go on until they end by themselves or ctx ends.
func (p *Peer) ServeUntil(ctx, accepting context.Context, srv *session.Server) error {
	err := srv.Serve(ctx, session.ListenerFunc(func(context.Context) (net.Conn, error) {
		c, err := p.Node.Accept(accepting)
		switch {
		case err == nil:
			info := c.Info()
			p.log.Debug("peer connection", "peer", info.Peer, "path", info.Route())
			return c, nil
		case accepting.Err() != nil:
			return nil, io.EOF
		}
		return nil, err
	}))
	if p.builtin != nil {
		select {
		case <-p.builtin.done:
			if p.builtin.err != nil {
				return p.builtin.err
			}
		default:
		}
	}
	if nerr := p.Node.Err(); nerr != nil {
		return &NodeStopped{URL: p.URL, Err: nerr}
	}
	return err
}

// drainTimeout is how long ServeWhile lets the connections it took end
// by themselves (a joiner reading its answer) once wait has returned.
const drainTimeout = 10 * time.Second

// ServeWhile serves every peer connection with srv while wait runs, for a
// command that serves until something happens (an invite is used, a file
// is fetched). Once wait returns, no more connections are taken, those
// taken get up to 10 s to end by themselves, and ServeWhile returns
// wait's error. Should serving stop first (the signaling server turned p
// away), wait's ctx ends and ServeWhile returns why serving stopped (as
// Serve says it).
func (p *Peer) ServeWhile(ctx context.Context, srv *session.Server, wait func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	accepting, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	var serveErr error
	served := make(chan struct{})
	go func() {
		serveErr = p.ServeUntil(ctx, accepting, srv)
		close(served)
		cancel() // wait's ctx: nothing more can come
	}()
	err := wait(ctx)
	select {
	case <-served:
		if serveErr != nil {
			return serveErr
		}
		return err
	default:
	}
	stopAccepting()
	select {
	case <-served:
	case <-time.After(drainTimeout):
		cancel()
		<-served
	}
	return err
}

// Running returns the Hello of home's agent when one runs as id on the
// signaling server url ("" = any). It logs why it passes over an agent
// that does not fit.
func Running(ctx context.Context, home string, id keys.PeerID, url string, log *slog.Logger) (Reply, bool) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := Hello(hctx, home)
	switch {
	case errors.Is(err, ErrNoAgent):
		return r, false
	case err != nil:
		log.Warn("the agent (kin up) did not answer; going on without it", "err", err)
		return r, false
	case r.ID != id:
		log.Debug("the agent runs as another identity", "agent", r.ID)
		return r, false
	case url != "" && r.Signal != url:
		log.Debug("the agent uses another signaling server", "agent", r.Signal, "want", url)
		return r, false
	}
	return r, true
}

// Link dials peers as one identity: through the agent (kin up) of its
// home, or through a dial-only registration of its own.
type Link struct {
	Identity *keys.Identity
	URL      string // the signaling server's
	raw      func(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error)
	close    func()
	log      *slog.Logger
}

// Reach returns a Link for dialing peers as cfg.Identity through the
// signaling server cfg.Signal: through home's agent when it runs as that
// identity there, otherwise registered by itself in signal.ModeDial
// (cfg.Mode is not used), so that it takes no offers meant for others.
func Reach(ctx context.Context, home string, cfg PeerConfig) (*Link, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, ok := Running(ctx, home, cfg.Identity.ID(), cfg.Signal, log); ok {
		log.Debug("dialing through the agent (kin up)")
		return &Link{Identity: cfg.Identity, URL: cfg.Signal, close: func() {}, log: log,
			raw: func(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error) {
				c, r, err := Dial(ctx, home, peer, instance)
				if err == nil && r.Dialed != "" {
					c = &dialedConn{Conn: c, home: home, name: r.Dialed, binding: r.Binding}
				}
				return c, Info(r), err
			}}, nil
	}
	cfg.Mode = signal.ModeDial
	p, err := StartPeer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return p.Link(), nil
}

// Link is p as a Link to dial others with; closing it closes p.
func (p *Peer) Link() *Link {
	log := p.log
	if log == nil { // a Peer made by hand, around a node of its own
		log = slog.New(slog.DiscardHandler)
	}
	return &Link{Identity: p.Identity, URL: p.URL, close: p.Close, log: log, raw: (&NodeHandler{Node: p.Node}).Dial}
}

// Close ends the link: the registration of its own, if it has one.
func (l *Link) Close() { l.close() }

// HandshakeError is a failed SSH handshake over a peer connection that
// was made: Err says why (session.ErrHostKeyMismatch,
// session.ErrAuthRefused, ...).
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "ssh handshake: " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// Dial connects to the owner of hostKey (its registration instance, from
// a ticket, or "") and runs the SSH client handshake, which checks that
// the peer holds hostKey; secret is a ticket's (nil for a friend). The
// connection's errors come from transport (or agent.ErrOffline); a failed
// handshake is a *HandshakeError.
func (l *Link) Dial(ctx context.Context, hostKey ssh.PublicKey, secret []byte, instance string) (*session.Client, transport.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, info, err := l.raw(ctx, keys.IDOf(hostKey), instance)
	if err != nil {
		return nil, info, err
	}
	client, err := session.NewClient(ctx, conn, session.ClientConfig{
		Identity: l.Identity, HostKey: hostKey, Secret: secret, Logger: l.log.With("part", "session"),
	})
	if err != nil {
		conn.Close()
		return nil, info, &HandshakeError{err}
	}
	return client, info, nil
}
