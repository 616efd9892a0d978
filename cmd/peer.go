package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport"
)

// How long kin waits for the signaling server and for a peer. (A
// variable so that tests of what a gone server means need not wait.)
var signalTimeout = 10 * time.Second

const connectTimeout = 30 * time.Second

// peer is this machine on the kin network: a transport node registered
// with a signaling server, ready to dial or accept peer connections.
// close stops it.
type peer struct {
	id       *keys.Identity
	url      string
	node     *transport.Node
	instance string // this registration's name; tickets it serves carry it
	log      *slog.Logger
}

// startPeer registers id with the signaling server at url, taking offers,
// and runs the transport node until close is called or ctx ends.
func startPeer(ctx context.Context, e *env, id *keys.Identity, url string) (*peer, error) {
	return startPeerMode(ctx, e, id, url, signal.ModeListen)
}

// startPeerMode is startPeer with a registration mode: which offers this
// process takes (see signal.ModeListen).
func startPeerMode(ctx context.Context, e *env, id *keys.Identity, url, mode string) (*peer, error) {
	tuneGC()
	p := &peer{id: id, url: url, instance: newInstance(), log: e.log}
	node, err := transport.Start(ctx, transport.StartConfig{
		Config: transport.Config{Interfaces: e.interfaces, Logger: e.log.With("part", "transport")},
		Signal: signal.ClientConfig{
			URL: url, Signer: id.Signer, Mode: mode, Instance: p.instance, Logger: e.log.With("part", "signal"),
			Lost:     func(err error) { e.log.Info("lost the signaling server; reconnecting", "signal", url, "err", err) },
			Regained: func(signal.Registration) { e.log.Info("registered with the signaling server again", "signal", url) },
		},
		RegisterTimeout: signalTimeout,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, signal.ErrUnreachable) { // that one names the server already
			err = fmt.Errorf("signaling server %s: %w", url, err)
		}
		return nil, withHint(err, "is the signaling server running and reachable from here? set it with --signal or KIN_SIGNAL")
	}
	p.node = node
	e.log.Debug("registered", "id", id.ID(), "signal", url, "ice_servers", len(node.Registration().ICEServers))
	return p, nil
}

func (p *peer) close() { p.node.Close() }

// serve serves every peer connection with srv until ctx ends (then nil),
// or the node stops: then it says why (the signaling server refused us).
func (p *peer) serve(ctx context.Context, srv *session.Server) error {
	return p.serveUntil(ctx, ctx, srv)
}

// serveUntil is serve taking connections only until accepting ends; those
// taken go on until they end by themselves or ctx ends.
func (p *peer) serveUntil(ctx, accepting context.Context, srv *session.Server) error {
	err := srv.Serve(ctx, session.ListenerFunc(func(context.Context) (net.Conn, error) {
		c, err := p.node.Accept(accepting)
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
	if nerr := p.node.Err(); nerr != nil {
		return withHint(fmt.Errorf("signaling server %s: %w", p.url, nerr),
			"the server turned this kin away; ask whoever runs it, or use another one with --signal or KIN_SIGNAL")
	}
	return err
}

// tasks are a command's goroutines under one ctx: the first to fail ends
// the others, and stop ends them all and waits for them.
type tasks struct {
	*errgroup.Group
	cancel context.CancelFunc
}

func newTasks(parent context.Context) (*tasks, context.Context) {
	ctx, cancel := context.WithCancel(parent)
	g, ctx := errgroup.WithContext(ctx)
	return &tasks{g, cancel}, ctx
}

// stop ends the tasks and returns the first error one of them returned.
func (t *tasks) stop() error {
	t.cancel()
	return t.Wait()
}

// link is the peer as a link to dial others with; its close is p's.
func (p *peer) link() *link {
	return &link{id: p.id, url: p.url, close: p.close, raw: (&agent.NodeHandler{Node: p.node}).Dial}
}

// dial opens a peer connection to the owner of hostKey and runs the SSH
// client handshake on it. name is how the user calls that peer.
func (p *peer) dial(ctx context.Context, e *env, hostKey ssh.PublicKey, secret []byte, name string) (*session.Client, transport.Info, error) {
	return p.link().dial(ctx, e, hostKey, secret, "", name)
}

// dialError explains a failed peer connection to name through url.
func dialError(err error, name, url string) error {
	if errors.Is(err, transport.ErrPeerOffline) || errors.Is(err, agent.ErrOffline) {
		return withHint(&notOnline{name, err},
			"ask %s to run kin (kin share / kin up) with the same signaling server (%s)", name, url)
	}
	if errors.Is(err, transport.ErrNoRoute) {
		return withHint(fmt.Errorf("connect to %s: %w", name, err),
			"run kin doctor (on both computers) to see what your networks let through; a relay (kin signal --turn) gets through where nothing else does")
	}
	return withHint(fmt.Errorf("connect to %s: %w", name, err), "run with --verbose to see what was tried")
}

// notOnline says that name is not online; it wraps why we know.
type notOnline struct {
	name string
	err  error
}

func (n *notOnline) Error() string { return n.name + " is not online" }
func (n *notOnline) Unwrap() error { return n.err }

// sshHandshake runs the SSH client handshake as id over conn, which must
// lead to the owner of hostKey.
func sshHandshake(ctx context.Context, e *env, id *keys.Identity, conn net.Conn, hostKey ssh.PublicKey, secret []byte, name string) (*session.Client, error) {
	client, err := session.NewClient(ctx, conn, session.ClientConfig{
		Identity: id, HostKey: hostKey, Secret: secret, Logger: e.log.With("part", "session"),
	})
	if err != nil {
		switch {
		case errors.Is(err, session.ErrHostKeyMismatch):
			return nil, withHint(err, "do not trust this connection; check %s's key with them", name)
		case errors.Is(err, session.ErrAuthRefused):
			return nil, withHint(err, `ask %s for a fresh ticket, or to add you as a friend with: kin friends add NAME "%s"`, name, id.AuthorizedKey())
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", name, err)
	}
	return client, nil
}

// serveSignal runs a signaling server with cfg on ln until ctx ends.
func serveSignal(ctx context.Context, e *env, ln net.Listener, cfg signal.ServerConfig) error {
	cfg.Logger = e.log.With("part", "signal-server")
	return signal.NewServer(cfg).Serve(ctx, ln)
}

var errSignalFailed = errors.New("the built-in signaling server failed")

// startServing starts a peer (startPeerMode) that serves something for
// the length of one command, on the configured signaling server, or on a
// built-in one it starts as one of t's tasks (run with t's ctx).
func (e *env) startServing(ctx context.Context, t *tasks, id *keys.Identity, mode string) (*peer, error) {
	url := e.signal
	if url == "" {
		ln, local, err := signal.ListenLocal(e.interfaces)
		if err != nil {
			return nil, withHint(err, "use a running one with --signal ws://HOST:PORT")
		}
		url = local
		e.log.Debug("built-in signaling server", "listen", ln.Addr(), "url", url)
		t.Go(func() error {
			if err := serveSignal(ctx, e, ln, signal.ServerConfig{}); err != nil {
				return fmt.Errorf("%w: %w", errSignalFailed, err)
			}
			return nil
		})
	}
	return startPeerMode(ctx, e, id, url, mode)
}

// tuneGC trades memory for speed in a process about to move bytes: pion
// allocates per packet, and collecting at 400% heap growth instead of
// 100% moves a data channel 1.3x faster on loopback (99 vs 74 MB/s,
// BenchmarkConnThroughput). The soft limit makes the collector keep up
// if the heap ever gets big. GOGC and GOMEMLIMIT still win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(512 << 20)
	}
}
