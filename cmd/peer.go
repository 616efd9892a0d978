package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/transport"
)

// How long kin waits for the signaling server. (A variable so that tests
// of what a gone server means need not wait.)
var signalTimeout = 10 * time.Second

// peerConfig says how id registers with the signaling server url, in
// mode (see signal.ModeListen), from this environment.
func (e *env) peerConfig(id *keys.Identity, url, mode string) agent.PeerConfig {
	return agent.PeerConfig{Identity: id, Signal: url, Mode: mode, Interfaces: e.interfaces, RegisterTimeout: signalTimeout, Logger: e.log}
}

// startPeer registers id with the signaling server at url in mode, or
// with a built-in one when url is "" (see agent.StartPeer).
func startPeer(ctx context.Context, e *env, id *keys.Identity, url, mode string) (*agent.Peer, error) {
	tuneGC()
	p, err := agent.StartPeer(ctx, e.peerConfig(id, url, mode))
	return p, registerAdvice(ctx, err)
}

// reach returns a link for dialing peers as id on the signaling server
// url: through the agent (kin up), or registered by itself.
func reach(ctx context.Context, e *env, id *keys.Identity, url string) (*agent.Link, error) {
	tuneGC()
	l, err := agent.Reach(ctx, e.home, e.peerConfig(id, url, ""))
	return l, registerAdvice(ctx, err)
}

// registerAdvice adds to a failed registration what to do about it.
func registerAdvice(ctx context.Context, err error) error {
	switch {
	case err == nil || ctx.Err() != nil:
		return err
	case errors.Is(err, agent.ErrBuiltinSignal):
		return withHint(err, "use a running one with --signal ws://HOST:PORT")
	}
	return withHint(err, "is the signaling server running and reachable from here? set it with --signal or KIN_SIGNAL")
}

// serve is p.Serve, with advice when the signaling server turned p away.
func serve(ctx context.Context, p *agent.Peer, srv *session.Server) error {
	return serveAdvice(p.Serve(ctx, srv))
}

func serveAdvice(err error) error {
	var stopped *agent.NodeStopped
	if errors.As(err, &stopped) {
		return withHint(err, "the server turned this kin away; ask whoever runs it, or use another one with --signal or KIN_SIGNAL")
	}
	return err
}

// dial connects through l to the owner of hostKey (see agent.Link.Dial),
// with what a failure means for the person who calls that peer name.
func dial(ctx context.Context, l *agent.Link, hostKey ssh.PublicKey, secret []byte, instance, name string) (*session.Client, transport.Info, error) {
	client, info, err := l.Dial(ctx, hostKey, secret, instance)
	return client, info, dialAdvice(err, l, name)
}

// dialAdvice explains an error of l.Dial to name, nil staying nil.
func dialAdvice(err error, l *agent.Link, name string) error {
	var he *agent.HandshakeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he):
		return handshakeError(he.Err, l.Identity, name)
	}
	return dialError(err, name, l.URL)
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

// handshakeError explains a failed SSH handshake as id with name.
func handshakeError(err error, id *keys.Identity, name string) error {
	switch {
	case errors.Is(err, session.ErrHostKeyMismatch):
		return withHint(err, "do not trust this connection; check %s's key with them", name)
	case errors.Is(err, session.ErrAuthRefused):
		return withHint(err, `ask %s for a fresh ticket, or to add you as a friend with: kin friends add NAME "%s"`, name, id.AuthorizedKey())
	}
	return fmt.Errorf("ssh handshake with %s: %w", name, err)
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
