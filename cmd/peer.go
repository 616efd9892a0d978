package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

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

// peer is this machine on the kin network: registered with a signaling
// server, ready to dial or accept peer connections. close stops it.
type peer struct {
	id       *keys.Identity
	url      string
	reg      signal.Registration
	node     *transport.Node
	instance string // this registration's name; tickets it serves carry it

	cancel context.CancelFunc
	wg     sync.WaitGroup
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
	ctx, cancel := context.WithCancel(ctx)
	p := &peer{id: id, url: url, cancel: cancel, instance: newInstance()}
	client := signal.NewClient(signal.ClientConfig{URL: url, Signer: id.Signer, Mode: mode, Instance: p.instance, Logger: e.log.With("part", "signal")})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		client.Run(ctx)
	}()
	readyCtx, readyCancel := context.WithTimeout(ctx, signalTimeout)
	reg, err := client.Ready(readyCtx)
	readyCancel()
	if err != nil {
		interrupted := ctx.Err()
		p.close()
		if interrupted != nil {
			return nil, interrupted
		}
		if !errors.Is(err, signal.ErrUnreachable) { // that one names the server already
			err = fmt.Errorf("signaling server %s: %w", url, err)
		}
		return nil, withHint(err, "is the signaling server running and reachable from here? set it with --signal or KIN_SIGNAL")
	}
	p.reg = reg
	e.log.Debug("registered", "id", reg.ID, "signal", url, "ice_servers", len(reg.ICEServers))
	p.node = transport.NewNode(client, transport.Config{
		ICEServers: func() []signal.ICEServer { return client.Registration().ICEServers },
		Interfaces: e.interfaces,
		Logger:     e.log.With("part", "transport"),
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.node.Run(ctx)
	}()
	return p, nil
}

func (p *peer) close() {
	p.cancel()
	p.wg.Wait()
}

// dial opens a peer connection to the owner of hostKey and runs the SSH
// client handshake on it. name is how the user calls that peer.
func (p *peer) dial(ctx context.Context, e *env, hostKey ssh.PublicKey, secret []byte, name string) (*session.Client, *transport.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := p.node.Dial(ctx, keys.IDOf(hostKey))
	if err != nil {
		return nil, nil, dialError(err, name, p.url)
	}
	client, err := sshHandshake(ctx, e, p.id, conn, hostKey, secret, name)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return client, conn, nil
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
