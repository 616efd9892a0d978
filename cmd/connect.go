package cmd

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/transport"
)

func connectCommand() *cli.Command {
	return &cli.Command{
		Name:      "connect",
		Usage:     "get a port someone shares on your localhost",
		ArgsUsage: "TICKET | FRIEND:PORT | FRIEND:PORT/udp",
		Description: `With a ticket from "kin share", or a friend's name and port:
    kin connect kin1...
    kin connect alice:3000
then use the port on this machine (localhost:3000 by default, --listen to
choose another) until you press Ctrl-C.

A UDP port (game servers, DNS) is FRIEND:PORT/udp, or a ticket from
"kin share PORT/udp"; kin connect then listens on UDP:
    kin connect alice:30000/udp       (UDP 127.0.0.1:30000)`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Usage: "local address to listen on (default 127.0.0.1:PORT)"},
		},
		Action: connectAction,
	}
}

// target is what a connect argument names.
type target struct {
	name     string
	hostKey  ssh.PublicKey
	port     int
	udp      bool
	secret   []byte
	signal   string
	instance string // the sharer's registration, from the ticket
}

func parseTarget(arg string, e *env) (*target, error) {
	friends, err := e.loadFriends()
	if err != nil {
		return nil, err
	}
	if keys.LooksLikeTicket(arg) {
		t, err := parseTicket(arg, keys.TicketPort)
		if err != nil {
			return nil, err
		}
		name := t.Name
		if fr, ok := friends.ByKey(t.Peer); ok {
			name = fr.Name
		}
		if name == "" {
			name = string(keys.IDOf(t.Peer))
		}
		return &target{name: name, hostKey: t.Peer, port: t.Port, udp: t.UDP, secret: t.Secret, signal: t.Signal, instance: t.Instance}, nil
	}
	name, portText, ok := strings.Cut(arg, ":")
	if !ok {
		return nil, withHint(fmt.Errorf("%q is neither a ticket nor FRIEND:PORT", arg), "kin connect alice:3000, or paste the ticket from kin share")
	}
	port, udp, err := keys.ParsePortProto(portText)
	if err != nil {
		return nil, err
	}
	fr, ok := friends.Find(name)
	if !ok {
		return nil, withHint(fmt.Errorf("you have no friend named %q", name), `add them with: kin friends add %s "ssh-ed25519 AAAA..." (see kin friends ls)`, name)
	}
	if e.signal == "" {
		return nil, noSignal("ask " + fr.Name + " for a ticket: they run kin share PORT and give you the line it prints")
	}
	return &target{name: fr.Name, hostKey: fr.Key, port: port, udp: udp, signal: e.signal}, nil
}

func connectAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("connect needs a ticket or FRIEND:PORT"), "kin connect kin1...   or   kin connect alice:3000   or   kin connect alice:30000/udp")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	t, err := parseTarget(c.Args().First(), e)
	if err != nil {
		return err
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	listen := c.String("listen")
	if listen == "" {
		listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(t.port))
	}
	port := session.Port{Num: t.port, UDP: t.udp}
	ln, err := session.ListenLocal(listen, port.Num, port.UDP)
	if err != nil {
		return withHint(fmt.Errorf("listen on %s: %w", listen, err), "choose a free local address with --listen 127.0.0.1:PORT")
	}
	ctx := c.Context
	ln.Start(ctx, e.log)
	defer ln.Close()

	l, err := reach(ctx, e, id, t.signal)
	if err != nil {
		return t.explain(err, e)
	}
	defer l.Close()
	err = l.Forward(ctx, ln, t.hostKey, t.secret, t.instance, agent.ForwardEvents{
		Connected: func(info transport.Info, again bool) {
			if !again {
				fmt.Fprintf(e.stderr, "forwarding %s -> %s:%s (%s, connected in %s)\n", ln, t.name, port, info.Route(), info.Timings.Connected.Round(1e6))
			} else {
				fmt.Fprintf(e.stderr, "connected to %s again (%s); forwarding %s -> %s:%s\n", t.name, info.Route(), ln, t.name, port)
			}
		},
		Lost: func(err error) {
			fmt.Fprintf(e.stderr, "lost the connection to %s (%v); reconnecting until you press Ctrl-C, %s stays open\n", t.name, err, ln)
		},
	})
	if errors.Is(err, session.ErrPortNotAllowed) {
		return t.explain(withHint(err, "ask %s to share port %s with you (kin friends add ... --allow port=%s, then kin share %s)", t.name, port, port, port), e)
	}
	return t.explain(dialAdvice(err, l, t.name), e)
}

// explain adds to err what it means for this target: for a ticket, that
// its kin share has stopped, when that is what err says.
func (t *target) explain(err error, e *env) error {
	if t.secret != nil {
		return ticketGone(err, e, t.name, "kin share", t.signal)
	}
	return err
}
