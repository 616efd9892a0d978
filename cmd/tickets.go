package cmd

import (
	"errors"
	"fmt"
	"strings"

	"kin/agent"
	"kin/keys"
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

// howFriendsReachUs is how kin share and kin receive tell the user what
// their friends type: each friend knows us under the name they chose,
// which this computer cannot know, or by our kin ID.
func howFriendsReachUs(command string, id keys.PeerID) string {
	return fmt.Sprintf("%s  (NAME: what they call you in their friends list; or your kin ID: %s)",
		strings.ReplaceAll(command, "@", "NAME"), strings.ReplaceAll(command, "@", string(id)))
}

// ticketKinds say, for each kind of ticket, what people call it, what it
// is for and the command that uses it.
var ticketKinds = map[keys.TicketKind]struct{ noun, what, use string }{
	keys.TicketPort:   {"ticket", "a ticket for a port", "kin connect"},
	keys.TicketFiles:  {"ticket", "a ticket for files", "kin receive"},
	keys.TicketInvite: {"invite", "an invite to become friends", "kin join"},
}

// parseTicket reads arg as a ticket of kind want, or says which command
// the ticket is for.
func parseTicket(arg string, want keys.TicketKind) (keys.Ticket, error) {
	t, err := keys.ParseTicket(arg)
	if err != nil {
		return t, withHint(err, "ask for the %s again and paste the whole line", ticketKinds[want].noun)
	}
	if t.Kind != want {
		got := ticketKinds[t.Kind]
		return t, withHint(fmt.Errorf("this is %s, not %s", got.what, ticketKinds[want].what), "use it with: %s %s", got.use, arg)
	}
	return t, nil
}
