package cmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/session/files"
	"kin/signal"
)

func receiveCommand() *cli.Command {
	return &cli.Command{
		Name:      "receive",
		Usage:     "receive files: with a ticket from kin send, or from friends as they send",
		ArgsUsage: "[TICKET]",
		Description: `With a ticket printed by "kin send FILE":
    kin receive kin1...
Without one, wait (until Ctrl-C) for friends who may send you files
(kin friends add NAME KEY --allow files) to run "kin send FILE YOURNAME",
where YOURNAME is the name they gave you, or your kin ID.
Files land in --dir (default: Downloads/kin in your home directory). An
existing file is never overwritten: the new one becomes "name (1).ext".`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "where received files go (default: ~/Downloads/kin)"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "accept without asking"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
		},
		Action: receiveAction,
	}
}

func receiveAction(c *cli.Context) error {
	if c.NArg() > 1 {
		return withHint(errors.New("receive takes at most one ticket"), "kin receive kin1...")
	}
	e, id, err := getEnvAnd(c, (*env).loadIdentity)
	if err != nil {
		return err
	}
	dir := inboxDir(c)
	inbox := &files.Inbox{Dir: dir}
	if err := checkInbox(e, inbox, "receive into a folder you can write with --dir DIR"); err != nil {
		return err
	}
	quiet := c.Bool("quiet")
	if c.NArg() == 0 {
		return receiveFromFriends(c.Context, e, id, inbox, quiet)
	}
	t, err := parseTicket(c.Args().First(), keys.TicketFiles)
	if err != nil {
		return err
	}
	name := t.Name
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	if fr, ok := friends.ByKey(t.Peer); ok {
		name = fr.Name
	}
	ask := !c.Bool("yes") && isTerminal(c.App.Reader) && isTerminal(e.stderr)
	l, err := reach(c.Context, e, id, t.Signal)
	if err != nil {
		return ticketGone(err, e, name, "kin send", t.Signal)
	}
	defer l.Close()
	client, _, err := dial(c.Context, l, t.Peer, t.Secret, t.Instance, name)
	if err != nil {
		return ticketGone(err, e, name, "kin send", t.Signal)
	}
	defer client.Close()
	pp := newProgress(e.stderr, "received", quiet)
	var nfiles int
	decide := func(o files.Offer) error {
		nfiles, _ = o.Files()
		if ask && !confirm(c.App.Reader, e.stderr, fmt.Sprintf("accept %s from %s into %s? [y/N] ", describeOffer(o), name, dir)) {
			return errors.New("declined")
		}
		return nil
	}
	results, err := client.Pull(c.Context, inbox, decide, pp.update)
	if err != nil {
		return withHint(fmt.Errorf("receive from %s: %w", name, err), "run the same kin receive again to continue where it stopped")
	}
	pp.finishReceived(nfiles)
	printLanded(e, dir, results)
	return nil
}

// checkInbox fails, with the reason and hint, if inbox cannot be written,
// and says how much unfinished transfers hold in it.
func checkInbox(e *env, inbox *files.Inbox, hint string) error {
	if err := inbox.Check(); err != nil {
		return withHint(err, "%s", hint)
	}
	if n, size, err := inbox.Partials(); err == nil && n > 0 {
		fmt.Fprintf(e.stderr, "note: %s not finished yet hold %s in %s; a file nobody resumes is removed after %d days, or when space runs out\n",
			plural(n, "transfer"), humanBytes(size), dirJoin(inbox.Dir, ".kin-partial"), int(files.PartialMaxAge.Hours()/24))
	}
	return nil
}

// printLanded lists where files landed, briefly.
func printLanded(e *env, dir string, results []files.Result) {
	if len(results) == 0 {
		return
	}
	top := map[string]bool{}
	var order []string
	for _, r := range results {
		if r.Error != "" || r.Name == "" {
			continue
		}
		t := strings.SplitN(r.Name, "/", 2)[0]
		if !top[t] {
			top[t] = true
			order = append(order, t)
		}
	}
	for _, r := range results {
		if r.Warning != "" {
			fmt.Fprintf(e.stderr, "warning: %s\n", r.Warning)
		}
	}
	for i, t := range order {
		if i == 5 {
			fmt.Fprintf(e.stderr, "  ... and %d more\n", len(order)-5)
			break
		}
		fmt.Fprintf(e.stdout, "%s\n", dirJoin(dir, t))
	}
}

func dirJoin(dir, name string) string {
	return strings.TrimSuffix(dir, "/") + "/" + name
}

func confirm(in io.Reader, out io.Writer, question string) bool {
	fmt.Fprint(out, question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

// receiveFromFriends waits for friends allowed files to push to us.
func receiveFromFriends(ctx context.Context, e *env, id *keys.Identity, inbox *files.Inbox, quiet bool) error {
	if e.signal == "" {
		return noSignal("receive with a ticket: the sender runs kin send FILE without a name and gives you the line it prints")
	}
	friendsFile, friends, err := e.watchFriends()
	if err != nil {
		return err
	}
	if r, ok := agent.Running(ctx, e.home, id.ID(), e.signal, e.log); ok {
		// Friends' files already land where kin up puts them; a second
		// listener of this identity would take its connections.
		return withHint(fmt.Errorf("kin up is running for this identity and receives friends' files into %s", r.Inbox),
			"they land there as friends send them; to receive elsewhere, stop kin up or start it with --dir")
	}
	p, err := startPeer(ctx, e, id, e.signal, signal.ModeListen)
	if err != nil {
		return err
	}
	defer p.Close()
	var mu sync.Mutex
	printers := map[string]*progressPrinter{}
	srv, err := session.NewServer(session.ServerConfig{
		Identity: id,
		Friends:  friendsFile.Get,
		Inbox:    inbox,
		Files: session.FileHooks{
			Offered: func(g session.Grant, o files.Offer) error {
				fmt.Fprintf(e.stderr, "%s is sending %s\n", g.Name, describeOffer(o))
				mu.Lock()
				printers[g.Name] = newProgress(e.stderr, "received", quiet)
				mu.Unlock()
				return nil
			},
			Progress: func(g session.Grant, pr files.Progress) {
				mu.Lock()
				pp := printers[g.Name]
				mu.Unlock()
				if pp != nil {
					pp.update(pr)
				}
			},
			Done: func(g session.Grant, _ bool, st files.Stats, err error) {
				mu.Lock()
				pp := printers[g.Name]
				delete(printers, g.Name)
				mu.Unlock()
				if err != nil {
					// The error says whether partial data was kept.
					fmt.Fprintf(e.stderr, "\nfrom %s: %v\n", g.Name, err)
					return
				}
				if pp != nil {
					pp.finishReceived(len(st.Results))
				}
				printLanded(e, inbox.Dir, st.Results)
			},
		},
		Logger: e.log.With("part", "session"),
	})
	if err != nil {
		return err
	}
	var allowed []string
	for _, f := range friends.List() {
		if f.Perms.Files {
			allowed = append(allowed, f.Name)
		}
	}
	fmt.Fprintf(e.stderr, "receiving into %s until you press Ctrl-C\n", inbox.Dir)
	if len(allowed) == 0 {
		fmt.Fprintf(e.stderr, "note: no friend may send you files yet; allow one with: kin friends add NAME KEY --allow files\n")
	} else {
		fmt.Fprintf(e.stderr, "friends allowed files (%s) run: %s\n", joinNames(allowed), howFriendsReachUs("kin send FILE @", id.ID()))
	}
	return serve(ctx, p, srv)
}
