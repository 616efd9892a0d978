package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/session"
	"kin/session/files"
	"kin/signal"
)

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "send files or directories to a friend, or to anyone with a ticket",
		ArgsUsage: "PATH... [FRIEND]",
		Description: `To a friend (they run "kin receive" or "kin up", and allow you files):
    kin send holiday.mp4 mom
    kin send ~/Photos/2026 mom            a whole directory, structure kept
    tar c dir | kin send - mom --name dir.tar
To anyone: leave out the friend, and kin prints a ticket for "kin receive":
    kin send report.pdf                   ->  kin receive kin1...
Files land in the receiver's inbox, never over an existing file. Each file
is checked with SHA-256 before it gets its name. If the connection breaks,
run the same kin send again: it continues where it stopped.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "file name for data read from stdin (PATH -)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
			&cli.BoolFlag{Name: "rename", Usage: `send names Windows cannot take (with : ? * < > | " \ or a trailing dot or space) with _ in their place`},
		},
		Action: sendAction,
	}
}

func sendAction(c *cli.Context) error {
	if c.NArg() == 0 {
		return withHint(errors.New("send needs something to send"), "kin send FILE FRIEND, or kin send FILE for a ticket")
	}
	e, friends, err := getEnvAnd(c, (*env).loadFriends)
	if err != nil {
		return err
	}
	args := c.Args().Slice()
	var to *keys.Friend
	if len(args) >= 2 {
		last := args[len(args)-1]
		if fr, ok := friends.Find(last); ok {
			to = &fr
			args = args[:len(args)-1]
		} else if _, err := os.Lstat(last); err != nil {
			return withHint(fmt.Errorf("you have no friend named %q, and there is no file %s", last, last), "see kin friends ls; leave out the name to get a ticket instead")
		}
	}
	plan, err := planFor(args, c.String("name"), c.Bool("rename"))
	if err != nil {
		return err
	}
	for _, w := range plan.Warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	for _, r := range plan.Renamed {
		fmt.Fprintf(e.stderr, "renamed: %s is sent as %s\n", r[0], r[1])
	}
	if n := len(plan.NotPortable); n > 0 {
		fmt.Fprintf(e.stderr, "note: %s not portable to Windows (%s): a receiver on Windows refuses them, others keep them as they are; --rename sends them with _ in place of what Windows refuses\n",
			plural(n, "name"), joinNames(plan.NotPortable))
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	if to != nil {
		return sendToFriend(c.Context, e, id, *to, plan, c.Bool("quiet"))
	}
	return sendWithTicket(c.Context, e, id, plan, c.Bool("quiet"))
}

func planFor(args []string, name string, rename bool) (*files.Plan, error) {
	if len(args) == 1 && args[0] == "-" {
		if name == "" {
			return nil, withHint(errors.New("sending stdin needs a name"), "tar c dir | kin send - mom --name dir.tar")
		}
		if rename {
			name = files.PortableName(name)
		}
		plan, err := files.StreamPlan(name, os.Stdin)
		if errors.Is(err, files.ErrNotPortable) {
			return nil, withHint(err, "choose another --name, or add --rename")
		}
		return plan, err
	}
	for _, a := range args {
		if a == "-" {
			return nil, errors.New("stdin (-) can only be sent alone")
		}
	}
	scan := files.Scan
	if rename {
		scan = files.ScanPortable
	}
	plan, err := scan(args...)
	if errors.Is(err, files.ErrNotPortable) {
		return nil, withHint(err, "send it with --rename (kin send --rename ...), which puts _ in place of what cannot be sent")
	}
	return plan, withHint(err, "check the path, and that you may read it")
}

// notPortableHint is the advice for a receiver that refused names Windows
// cannot take.
const notPortableHint = "send again with --rename, which puts _ in place of what Windows refuses"

func sendToFriend(ctx context.Context, e *env, id *keys.Identity, to keys.Friend, plan *files.Plan, quiet bool) error {
	if e.signal == "" {
		return noSignal("send with a ticket: leave out the name, and give " + to.Name + " the line kin send prints")
	}
	l, err := reach(ctx, e, id, e.signal)
	if err != nil {
		return err
	}
	defer l.Close()
	client, info, err := dial(ctx, l, to.Key, nil, "", to.Name)
	if err != nil {
		return err
	}
	defer client.Close()
	nfiles, _ := plan.Offer.Files()
	if !quiet {
		fmt.Fprintf(e.stderr, "sending %s to %s (%s)\n", describeOffer(plan.Offer), to.Name, info.Route())
	}
	pp := newProgress(e.stderr, "sent", quiet)
	st, err := client.Push(ctx, plan, pp.update)
	printSkipped(e, st)
	if err != nil {
		switch {
		case errors.Is(err, files.ErrNotPortable):
			return withHint(fmt.Errorf("send to %s: %w", to.Name, err), notPortableHint)
		case errors.Is(err, session.ErrFilesNotAllowed):
			return withHint(err, "ask %s to allow you files: kin friends add ... --allow files", to.Name)
		case errors.Is(err, files.ErrInboxUnwritable):
			return withHint(fmt.Errorf("send to %s: %w", to.Name, err), "ask %s to make their inbox writable (or to receive into another folder with --dir); sending again before that cannot help", to.Name)
		case errors.Is(err, session.ErrConnectionLost):
			return withHint(fmt.Errorf("send to %s: %w", to.Name, err), "%s's kin stopped, or the network between you did: once it is back, run the same kin send again to continue where it stopped", to.Name)
		case errors.Is(err, files.ErrDiskFull):
			return withHint(fmt.Errorf("send to %s: %w", to.Name, err), "ask %s to free some space, then run the same kin send again to continue where it stopped", to.Name)
		}
		return withHint(fmt.Errorf("send to %s: %w", to.Name, err), "run the same kin send again to continue where it stopped")
	}
	pp.finish(st.Sent, nfiles, st.Resumed)
	return nil
}

// printSkipped tells the sender what the receiver skipped on purpose.
func printSkipped(e *env, st files.Stats) {
	for _, w := range st.Warnings {
		fmt.Fprintf(e.stderr, "warning: the receiver %s\n", w)
	}
}

// sendWithTicket waits for the holder of a fresh ticket to fetch plan, and
// returns once one of them has received everything.
func sendWithTicket(parent context.Context, e *env, id *keys.Identity, plan *files.Plan, quiet bool) error {
	// Only offers naming this process (from its ticket) reach it, so a
	// running kin up (or another kin send) of this identity keeps its own.
	p, err := startPeer(parent, e, id, e.signal, signal.ModeTicket)
	if err != nil {
		return err
	}
	defer p.Close()
	secret := keys.NewSecret()
	nfiles, _ := plan.Offer.Files()
	done := make(chan error, 1)
	var finished atomic.Bool // one receiver has everything
	pp := newProgress(e.stderr, "sent", quiet)
	srv, err := session.NewServer(session.ServerConfig{
		Identity: id,
		Tickets:  session.OneTicket(secret, keys.Permissions{Files: true}),
		Outbox:   plan,
		Files: session.FileHooks{
			Progress: func(_ session.Grant, pr files.Progress) { pp.update(pr) },
			Done: func(_ session.Grant, sent bool, st files.Stats, err error) {
				if finished.Load() || parent.Err() != nil {
					// An earlier receiver's session ending now (its
					// connection lost, or closed as we stop) is old news.
					return
				}
				printSkipped(e, st)
				if sent && err == nil {
					finished.Store(true)
					pp.finish(st.Sent, nfiles, st.Resumed)
					select {
					case done <- nil:
					default:
					}
				} else if errors.Is(err, files.ErrNotPortable) {
					fmt.Fprintf(e.stderr, "\ntransfer stopped: %v (%s)\n", err, notPortableHint)
				} else if errors.Is(err, files.ErrInboxUnwritable) {
					fmt.Fprintf(e.stderr, "\ntransfer stopped: %v\n", err)
				} else if err != nil {
					fmt.Fprintf(e.stderr, "\ntransfer stopped: %v (running kin receive with the same ticket continues it)\n", err)
				}
			},
		},
		Logger: e.log.With("part", "session"),
	})
	if err != nil {
		return err
	}
	ticket := keys.Ticket{Kind: keys.TicketFiles, Peer: id.Public(), Signal: p.URL, Name: displayName(), Secret: secret, Instance: p.Instance}
	fmt.Fprintf(e.stderr, "ready to send %s; the receiver runs:\n", describeOffer(plan.Offer))
	fmt.Fprintf(e.stdout, "kin receive %s\n", ticket)
	err = p.ServeWhile(parent, srv, func(ctx context.Context) error {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if parent.Err() != nil {
		fmt.Fprintln(e.stderr, "stopped; the ticket no longer works")
		return nil
	}
	return serveAdvice(err)
}
