package agent

import (
	"context"
	"errors"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/session"
	"kin/signal"
	"kin/transport"
)

// How long Forward waits between attempts to reconnect: doubling from
// reconnectMin up to reconnectMax.
const (
	reconnectMin = time.Second
	reconnectMax = 30 * time.Second
)

// ForwardEvents tell the person watching what Forward does; either may
// be nil.
type ForwardEvents struct {
	Connected func(info transport.Info, again bool) // a connection to the port is up (again: after a lost one)
	Lost      func(err error)                       // it was lost; Forward makes it again
}

// Forward carries local to the port of the owner of hostKey (see Dial
// for hostKey, secret and instance), like autossh: after the first
// connection, a lost one is made again, with backoff, while local stays
// open. It returns nil once ctx ends, or the error of a connection that
// trying again cannot change: the first one failing, a refusal (see
// Refused), or, for a ticket (secret not nil), its issuer gone offline.
// A failed handshake is a *HandshakeError.
func (l *Link) Forward(ctx context.Context, local *session.LocalPort, hostKey ssh.PublicKey, secret []byte, instance string, ev ForwardEvents) error {
	connected := false
	wait := reconnectMin
	pause := func() bool { // false once ctx ended
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, reconnectMax)
		return true
	}
	for {
		client, info, err := l.Dial(ctx, hostKey, secret, instance)
		if err == nil {
			if err = local.Check(ctx, client); err != nil {
				client.Close()
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !connected || Refused(err) || (secret != nil && errors.Is(err, transport.ErrPeerOffline)) {
				return err // a ticket's kin share that stopped never comes back
			}
			l.log.Debug("reconnect failed", "err", err, "next", wait)
			if !pause() {
				return nil
			}
			continue
		}
		l.log.Debug("peer connection", "path", info.Route(), "local", info.Local, "remote", info.Remote)
		if ev.Connected != nil {
			ev.Connected(info, connected)
		}
		connected, wait = true, reconnectMin
		err = local.Forward(ctx, client)
		client.Close()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("the other side closed it")
		}
		if ev.Lost != nil {
			ev.Lost(err)
		}
		// Not at once: a peer that just stopped may still look registered
		// for a moment, and an offer to it waits out the dial's timeout.
		if !pause() {
			return nil
		}
	}
}

// Refused reports whether err is a refusal, which trying again would only
// repeat: the peer does not let us in, not to this port, or is not who we
// meant, or the signaling server turned us away.
func Refused(err error) bool {
	return errors.Is(err, session.ErrAuthRefused) || errors.Is(err, session.ErrPortNotAllowed) ||
		errors.Is(err, session.ErrHostKeyMismatch) || errors.Is(err, signal.ErrRefused)
}
