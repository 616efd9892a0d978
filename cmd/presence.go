package cmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport"
)

// One identity, one presence: while kin up runs, the other commands of
// its identity go through it (package agent); without it, each registers
// in a mode that takes no offers meant for another process of ours.

// newInstance names one registration with the signaling server.
func newInstance() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// runningAgent returns the reply of this kin home's agent when it runs as
// id on the signaling server url ("" = any).
func runningAgent(ctx context.Context, e *env, id *keys.Identity, url string) (agent.Reply, bool) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := agent.Hello(hctx, e.home)
	switch {
	case errors.Is(err, agent.ErrNoAgent):
		return r, false
	case err != nil:
		e.log.Warn("the agent (kin up) did not answer; going on without it", "err", err)
		return r, false
	case r.ID != id.ID():
		e.log.Debug("the agent runs as another identity", "agent", r.ID)
		return r, false
	case url != "" && r.Signal != url:
		e.log.Debug("the agent uses another signaling server", "agent", r.Signal, "want", url)
		return r, false
	}
	return r, true
}

// link dials peers as one identity: through the agent, or through a
// dial-only registration of its own.
type link struct {
	id    *keys.Identity
	url   string
	raw   func(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error)
	close func()
}

// reach returns a link for dialing peers as id on the signaling server url.
func reach(ctx context.Context, e *env, id *keys.Identity, url string) (*link, error) {
	if _, ok := runningAgent(ctx, e, id, url); ok {
		e.log.Debug("dialing through the agent (kin up)")
		return &link{id: id, url: url, close: func() {},
			raw: func(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error) {
				c, r, err := agent.Dial(ctx, e.home, peer, instance)
				return c, agent.Info(r), err
			}}, nil
	}
	p, err := startPeerMode(ctx, e, id, url, signal.ModeDial)
	if err != nil {
		return nil, err
	}
	return p.link(), nil
}

// dial connects to the owner of hostKey (its registration instance, from a
// ticket, or "") and runs the SSH client handshake; name is how the user
// calls that peer.
func (l *link) dial(ctx context.Context, e *env, hostKey ssh.PublicKey, secret []byte, instance, name string) (*session.Client, transport.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, info, err := l.raw(ctx, keys.IDOf(hostKey), instance)
	if err != nil {
		return nil, info, dialError(err, name, l.url)
	}
	client, err := sshHandshake(ctx, e, l.id, conn, hostKey, secret, name)
	if err != nil {
		conn.Close()
		return nil, info, err
	}
	return client, info, nil
}
