package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/signal"
	"kin/transport/netcheck"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "explain this network: signaling, public address, NAT kind, relays; with a friend, the paths tried",
		ArgsUsage: "[FRIEND]",
		Description: `kin doctor checks, in order, what a connection needs:
    the signaling server      can kin reach it and register?
    your public address       what STUN servers see (UDP must get out)
    your NAT                  one public port for every destination (cone) or
                              a new one each time (symmetric); does it let in
                              packets from where you never sent (full cone)?
    the relays                does each TURN server answer and accept kin's credentials?
and says what that means for connecting to friends.
    kin doctor            this machine's network
    kin doctor dad        also connect to dad and list the candidate pairs tried and chosen`,
		Action: doctorAction,
	}
}

func doctorAction(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	out := e.stdout
	if e.signal == "" {
		return noSignal("without one, kin share and kin send run their own on this network, and there is nothing to check")
	}
	var friend keys.Friend
	if c.NArg() > 0 {
		if friend, err = friendByName(e, c.Args().First()); err != nil {
			return err
		}
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	start := time.Now()
	p, err := startPeer(c.Context, e, id, e.signal, signal.ModeDial) // never takes kin up's connections
	if err != nil {
		fmt.Fprintf(out, "signaling: %s: NOT reachable\n", e.signal)
		return err
	}
	defer p.Close()
	fmt.Fprintf(out, "signaling: %s: registered as %s in %s\n", e.signal, p.Node.Registration().ID, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	r, err := netcheck.Check(ctx, p.Node.Registration().ICEServers)
	if err != nil {
		return fmt.Errorf("check the network: %w", err)
	}
	if len(r.Mappings) == 0 {
		fmt.Fprintln(out, "stun: the signaling server hands out no STUN server")
	}
	for _, m := range r.Mappings {
		if m.Seen == "" {
			fmt.Fprintf(out, "stun: %s: no answer over UDP\n", m.Server)
		} else {
			fmt.Fprintf(out, "stun: %s sees you as %s\n", m.Server, m.Seen)
		}
	}
	fmt.Fprintf(out, "nat: %s\n", r.NAT)
	if len(r.Relays) == 0 {
		fmt.Fprintln(out, "turn: the signaling server hands out no relay; peers that cannot connect directly will not connect")
	}
	relayOK := false
	for _, rl := range r.Relays {
		if rl.Err != nil {
			fmt.Fprintf(out, "turn: %s: FAILED: %v\n", rl.URL, rl.Err)
		} else {
			relayOK = true
			fmt.Fprintf(out, "turn: %s: relay %s allocated\n", rl.URL, rl.Relay)
		}
	}
	fmt.Fprintf(out, "advice: %s\n", r.NAT.Advice())
	if !relayOK && (r.NAT == netcheck.UDPBlocked || r.NAT == netcheck.Symmetric) {
		fmt.Fprintln(out, "advice: without a working relay, many connections from here will fail; ask the signaling server's operator to run kin signal --turn")
	}
	if friend.Name == "" {
		return nil
	}
	return doctorPeer(c.Context, e, p, friend)
}

// doctorPeer connects to friend and lists what ICE tried.
func doctorPeer(ctx context.Context, e *env, p *agent.Peer, friend keys.Friend) error {
	out := e.stdout
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // as long as any kin command waits for a peer
	defer cancel()
	conn, err := p.Node.Dial(ctx, keys.IDOf(friend.Key))
	if err != nil {
		fmt.Fprintf(out, "peer: %s: %v\n", friend.Name, err)
		return withHint(fmt.Errorf("connect to %s: %w", friend.Name, err), "is %s running kin up (or kin share) with the same signaling server?", friend.Name)
	}
	defer conn.Close()
	info := conn.Info()
	fmt.Fprintf(out, "peer: %s: %s, connected in %s\n", friend.Name, info.Route(), info.Timings.Connected.Round(time.Millisecond))
	for _, pr := range conn.Pairs() {
		mark := " "
		if pr.Selected {
			mark = "*"
		}
		fmt.Fprintf(out, "pair:%s %s -> %s %s\n", mark, pr.Local, pr.Remote, pr.State)
	}
	client, err := session.NewClient(ctx, conn, session.ClientConfig{Identity: p.Identity, HostKey: friend.Key, Logger: e.log.With("part", "session")})
	switch {
	case errors.Is(err, session.ErrHostKeyMismatch):
		fmt.Fprintf(out, "ssh: %s answered with a different key: do not trust this connection\n", friend.Name)
	case errors.Is(err, session.ErrAuthRefused):
		fmt.Fprintf(out, "ssh: %s is there but does not have you as a friend\n", friend.Name)
	case err != nil:
		fmt.Fprintf(out, "ssh: handshake failed: %v\n", err)
	default:
		fmt.Fprintf(out, "ssh: %s's key checked; you are their friend\n", friend.Name)
		client.Close()
	}
	return nil
}
