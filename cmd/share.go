package cmd

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/signal"
)

func shareCommand() *cli.Command {
	return &cli.Command{
		Name:      "share",
		Usage:     "share a local port (TCP, or UDP with /udp): prints a ticket anyone can connect with",
		ArgsUsage: "PORT | PORT/udp",
		Description: `Shares localhost:PORT on this machine until you press Ctrl-C. It prints one
line, a ticket; whoever runs it gets your port on their own localhost:
    kin share 3000        ->  kin connect kin1...
The ticket grants that one port and nothing else, and stops working when
kin share exits. Friends allowed the port (kin friends add ... --allow
port=3000) can connect without a ticket: kin connect YOURNAME:3000, where
YOURNAME is the name they gave you, or your kin ID.

PORT/udp shares a UDP port (game servers, DNS, WireGuard):
    kin share 30000/udp   ->  kin connect kin1...  (listens on UDP)
Friends need --allow port=30000/udp. UDP goes to 127.0.0.1:PORT.

With no signaling server configured (--signal / KIN_SIGNAL), kin share runs
one itself on this machine and puts its address in the ticket, which is all
two computers on one network need.`,
		Action: shareAction,
	}
}

func shareAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("share needs one port"), "kin share 3000")
	}
	num, udp, err := keys.ParsePortProto(c.Args().First())
	if err != nil {
		return err
	}
	port := session.Port{Num: num, UDP: udp}
	e, id, err := getEnvAnd(c, (*env).loadIdentity)
	if err != nil {
		return err
	}
	friendsFile, friends, err := e.watchFriends()
	if err != nil {
		return err
	}
	ctx := c.Context
	secret := keys.NewSecret()
	if _, ok := agent.Running(ctx, e.home, id.ID(), e.signal, e.log); ok {
		return shareThroughAgent(c, e, id, port, secret, friends)
	}
	p, err := startPeer(ctx, e, id, e.signal, signal.ModeListen)
	if err != nil {
		return err
	}
	defer p.Close()

	cfg := session.ServerConfig{
		Identity: id,
		Friends:  friendsFile.Get,
		Tickets:  session.OneTicket(secret, port.Grant()),
		Logger:   e.log.With("part", "session"),
	}
	port.ServeIn(&cfg)
	srv, err := session.NewServer(cfg)
	if err != nil {
		return err
	}

	printShare(e, id, port, secret, p.URL, p.Instance, friends)
	err = serve(ctx, p, srv)
	if ctx.Err() != nil {
		fmt.Fprintln(e.stderr, "stopped sharing; the ticket no longer works")
		return nil
	}
	return err
}

// shareThroughAgent has the running agent (kin up) serve the ticket, so
// this identity stays one presence; the share ends when this command does.
func shareThroughAgent(c *cli.Context, e *env, id *keys.Identity, port session.Port, secret []byte, friends *keys.Friends) error {
	ctl, r, err := agent.Share(c.Context, e.home, port.Num, port.UDP, secret)
	if err != nil {
		return withHint(fmt.Errorf("share through kin up: %w", err), "stop kin up, or update it to this kin's version")
	}
	defer ctl.Close()
	printShare(e, id, port, secret, r.Signal, r.Instance, friends)
	fmt.Fprintln(e.stderr, "(served by your kin up, which keeps serving your friends meanwhile)")
	select {
	case <-c.Context.Done():
		fmt.Fprintln(e.stderr, "stopped sharing; the ticket no longer works")
		return nil
	case <-agent.Gone(ctl):
		return withHint(errors.New("kin up stopped, and the ticket with it"), "start kin up again, then kin share again for a new ticket")
	}
}

// printShare tells the user what is shared and prints the ticket for it:
// secret, as id, on the signaling server url, to its registration instance.
func printShare(e *env, id *keys.Identity, port session.Port, secret []byte, url, instance string, friends *keys.Friends) {
	ticket := keys.Ticket{Kind: keys.TicketPort, Port: port.Num, UDP: port.UDP, Peer: id.Public(), Signal: url, Name: displayName(), Secret: secret, Instance: instance}
	target := port.Target()
	if port.UDP {
		target += "/udp" // nothing to probe: UDP services answer only what they understand
	} else if probe, err := net.DialTimeout("tcp", target, time.Second); err != nil {
		fmt.Fprintf(e.stderr, "note: nothing answers on %s yet; connections will fail until something listens there\n", target)
	} else {
		probe.Close()
	}
	fmt.Fprintf(e.stderr, "sharing %s until you press Ctrl-C; give this line to the person who should get it:\n", target)
	fmt.Fprintf(e.stdout, "kin connect %s\n", ticket)
	var allowed []string
	for _, fr := range friends.List() {
		if port.AllowedBy(fr.Perms) {
			allowed = append(allowed, fr.Name)
		}
	}
	if len(allowed) > 0 {
		fmt.Fprintf(e.stderr, "friends allowed port %s (%s) can also run: %s\n", port, joinNames(allowed), howFriendsReachUs("kin connect @:"+port.String(), keys.IDOf(ticket.Peer)))
	}
}

func joinNames(n []string) string {
	if len(n) > 3 {
		return fmt.Sprintf("%s, %s, %s and %d more", n[0], n[1], n[2], len(n)-3)
	}
	s := ""
	for i, x := range n {
		if i > 0 {
			s += ", "
		}
		s += x
	}
	return s
}
