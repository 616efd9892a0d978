package cmd

import (
	"errors"
	"fmt"

	"kin/agent"
	"kin/signal"
	"kin/transport"
)

// ticketGone explains, for the holder of a ticket, why the ticket's issuer
// cannot be reached: a ticket works only while the kin share or kin send
// (maker) that printed it runs. err is from reaching the ticket's
// signaling server (ticketSignal) or from dialing its issuer (name); nil
// stays nil, and errors that mean something else come back unchanged.
func ticketGone(err error, e *env, name, maker, ticketSignal string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, signal.ErrUnreachable) && ticketSignal != e.signal:
		// Not the server this computer is set to use: the one the sharer's
		// kin ran itself, which stops with it.
		return withHint(fmt.Errorf("the ticket no longer works: the %s that made it has stopped (its signaling server does not answer): %w", maker, err),
			"ask %s for a new ticket; if their %s is still running, this computer cannot reach theirs: are you on the same network?", name, maker)
	case errors.Is(err, transport.ErrPeerOffline), errors.Is(err, agent.ErrOffline):
		return withHint(fmt.Errorf("the ticket no longer works: the %s that made it has stopped (%w)", maker, err),
			"ask %s to run %s again and give you the new ticket", name, maker)
	}
	return err
}
