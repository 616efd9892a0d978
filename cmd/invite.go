package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/signal"
)

func inviteCommand() *cli.Command {
	return &cli.Command{
		Name:      "invite",
		Usage:     "invite someone to be your friend: prints one line for them to run",
		ArgsUsage: "NAME",
		Description: `Pairs you with someone without copying keys:
    kin invite dad --allow shell,files     prints: kin join kin1...
    kin join kin1...                       dad runs it, once
Then you are each other's friends: you call them NAME and they may do what
--allow says on your computer (shell, files, port=N, port=*); they call you
by your name (or their --name) and allow you nothing until they choose to.

The invite works once, for --for (default 1h). While your agent (kin up)
runs, it answers the invite; otherwise kin invite stays online until the
invite is used or expires, or you press Ctrl-C.
    kin invite --list            your invites and what became of them
    kin invite --revoke NAME     (or its ID) make a pending invite useless`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "allow", Usage: "what they may do on your computer: shell, files, port=N, port=N/udp, port=* (comma-separated or repeated)"},
			&cli.DurationFlag{Name: "for", Value: time.Hour, Usage: "how long the invite works, e.g. 30m, 24h"},
			&cli.BoolFlag{Name: "list", Usage: "list your invites"},
			&cli.StringFlag{Name: "revoke", Usage: "revoke the pending invite with this name or ID"},
		},
		Action: inviteAction,
	}
}

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "accept an invite from kin invite: you and the inviter become friends",
		ArgsUsage: "INVITE",
		Description: `Run the line someone's "kin invite" printed:
    kin join kin1...
It connects to the inviter, proves your key, and records each of you in the
other's friends file: they allow you what the invite says, and you allow
them nothing (grant things later in your friends file). You call them by
the name in the invite, or --name.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "what to call the inviter (default: the name in the invite)"},
		},
		Action: joinAction,
	}
}

func (e *env) invites() keys.Invites { return keys.Invites{Path: filepath.Join(e.home, "invites")} }

// addedSentence says what a join added on the inviter's side.
func addedSentence(fr keys.Friend) string {
	return fmt.Sprintf("%s joined: added %s (%s) to your friends, allowed: %s", fr.Name, fr.Name, fr.ID(), fr.Perms)
}

func inviteAction(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	store := e.invites()
	if c.Bool("list") {
		return inviteList(e, store)
	}
	if r := c.String("revoke"); r != "" {
		revoked, err := store.Revoke(r, time.Now())
		if err != nil {
			return withHint(err, "kin invite --list shows your invites")
		}
		for _, iv := range revoked {
			fmt.Fprintf(e.stdout, "revoked the invite for %s (%s); it no longer works\n", iv.Name, iv.ID)
		}
		return nil
	}
	if c.NArg() != 1 {
		return withHint(errors.New("invite needs the name you will call them"), "kin invite dad --allow shell,files")
	}
	name := c.Args().First()
	if err := keys.ValidName(name); err != nil {
		return err
	}
	var perms keys.Permissions
	for _, a := range c.StringSlice("allow") {
		if err := perms.ParsePermission(a); err != nil {
			return err
		}
	}
	life := c.Duration("for")
	if life <= 0 || life > keys.MaxInviteLifetime {
		return withHint(fmt.Errorf("--for %s is not a usable lifetime", life), "an invite may last from 1s to %dh, e.g. --for 30m", int(keys.MaxInviteLifetime.Hours()))
	}
	id, friends, err := e.loadIdentityAndFriends()
	if err != nil {
		return err
	}
	if _, ok := friends.ByName(name); ok {
		return withHint(fmt.Errorf("you already have a friend named %q", name), "choose another name, or remove them first: kin friends rm %s", name)
	}

	if r, up := agent.Running(c.Context, e.home, id.ID(), "", e.log); up {
		url := r.Signal
		tk, iv, err := newStoredInvite(e, store, id, name, perms, url, life)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "your agent (kin up) will answer this invite until %s and log who joins; give %s this line:\n", iv.Expires.Format("15:04"), name)
		fmt.Fprintf(e.stdout, "kin join %s\n", tk)
		return nil
	}
	return inviteOnline(c, e, store, id, name, perms, life)
}

// newStoredInvite issues an invite for name (see keys.Invites.Issue),
// reached through the signaling server url.
func newStoredInvite(e *env, store keys.Invites, id *keys.Identity, name string, perms keys.Permissions, url string, life time.Duration) (keys.Ticket, keys.Invite, error) {
	tk, iv, err := store.Issue(id, displayName(), name, perms, url, life, time.Now())
	if errors.Is(err, keys.ErrInvitePending) {
		err = withHint(err, "revoke the old one with kin invite --revoke %s, or list them with kin invite --list", name)
	}
	return tk, iv, err
}

// inviteOnline serves the invite itself, with no agent running, until it
// is used or expires or the user presses Ctrl-C.
func inviteOnline(c *cli.Context, e *env, store keys.Invites, id *keys.Identity, name string, perms keys.Permissions, life time.Duration) error {
	builtin := e.signal == ""
	p, err := startPeer(c.Context, e, id, e.signal, signal.ModeListen)
	if err != nil {
		return err
	}
	defer p.Close()
	tk, iv, err := newStoredInvite(e, store, id, name, perms, p.URL, life)
	if err != nil {
		return err
	}
	// What people read here are sentences; the session's log is for --verbose.
	log := slog.New(slog.DiscardHandler)
	if c.Bool("verbose") {
		log = e.log.With("part", "session")
	}
	joined := make(chan keys.Friend, 1)
	srv, err := session.NewServer(session.ServerConfig{
		Identity: id,
		Invites: session.InviteBook(store, e.friendsPath(), log, func(used keys.Invite, fr keys.Friend) {
			if used.ID == iv.ID {
				joined <- fr
			} else {
				fmt.Fprintln(e.stdout, addedSentence(fr))
			}
		}),
		Logger: log,
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(e.stderr, "waiting for %s to join until %s (or Ctrl-C); give %s this line:\n", name, iv.Expires.Format("15:04:05"), name)
	fmt.Fprintf(e.stdout, "kin join %s\n", tk)
	var fr keys.Friend
	err = p.ServeWhile(c.Context, srv, func(ctx context.Context) (err error) {
		fr, err = session.AwaitInvite(ctx, store, iv, joined)
		return err
	})
	switch {
	case err == nil:
		fmt.Fprintln(e.stdout, addedSentence(fr))
		return nil
	case errors.Is(err, keys.ErrInviteExpired):
		return withHint(fmt.Errorf("the invite for %s expired before anyone used it", name), "make a new one with kin invite %s (--for sets how long it works)", name)
	case errors.Is(err, keys.ErrInviteRevoked):
		fmt.Fprintf(e.stderr, "the invite for %s was revoked\n", name)
		return nil
	case errors.Is(err, keys.ErrInviteUsed):
		fmt.Fprintf(e.stderr, "the invite for %s was used (answered by your agent): see kin friends ls\n", name)
		return nil
	}
	if builtin {
		store.Revoke(iv.ID, time.Now()) // nobody can reach it any more
	}
	if c.Context.Err() == nil {
		return serveAdvice(err) // the signaling server turned us away
	}
	if builtin {
		fmt.Fprintln(e.stderr, "stopped; the invite no longer works (it needed this kin invite's built-in signaling server)")
	} else {
		fmt.Fprintf(e.stderr, "stopped waiting; if you start kin up, it answers the invite until %s (kin invite --revoke %s cancels it)\n", iv.Expires.Format("15:04"), iv.ID)
	}
	return nil
}

func inviteList(e *env, store keys.Invites) error {
	list, err := store.List()
	if err != nil {
		return withHint(err, "fix or remove %s", store.Path)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stderr, "no invites; make one with: kin invite NAME --allow shell,files")
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tALLOWED\tSTATE")
	for _, iv := range list {
		state := iv.Status(now)
		switch state {
		case keys.InvitePending:
			state = "waiting until " + iv.Expires.Local().Format("Jan 2 15:04")
		case keys.InviteExpired:
			state = "expired " + iv.Expires.Local().Format("Jan 2 15:04")
		case keys.InviteUsed, keys.InviteRevoked:
			state += " " + iv.Closed.Local().Format("Jan 2 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", iv.ID, iv.Name, iv.Allow, state)
	}
	return tw.Flush()
}

func joinAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("join needs the invite"), "kin join kin1...   (the line kin invite printed)")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	t, err := parseTicket(c.Args().First(), keys.TicketInvite)
	if err != nil {
		return err
	}
	name := c.String("name")
	if name == "" {
		name = t.Name
		if keys.ValidName(name) != nil {
			return withHint(fmt.Errorf("the invite suggests the name %q for its sender, which kin cannot use", t.Name), "choose a name: kin join --name NAME kin1...")
		}
	} else if err := keys.ValidName(name); err != nil {
		return err
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	if keys.IDOf(t.Peer) == id.ID() {
		return errors.New("this invite is your own; give it to the person you invited")
	}
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	old, known := friends.ByKey(t.Peer)
	if known {
		name = old.Name
	} else if _, taken := friends.ByName(name); taken {
		return withHint(fmt.Errorf("you already have a friend named %q", name), "choose another name for the inviter: kin join --name NAME kin1...")
	}

	ctx := c.Context
	expired := func() error {
		if time.Now().Before(t.Expires) {
			return nil
		}
		return withHint(fmt.Errorf("%w (at %s)", keys.ErrInviteExpired, t.Expires.Local().Format("Jan 2 15:04")), "ask %s for a new invite", name)
	}
	l, err := reach(ctx, e, id, t.Signal) // a joiner only dials: through kin up, if it runs
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if err := expired(); err != nil {
			return err
		}
		var h *hinted
		if errors.As(err, &h) {
			err = h.err // our hint replaces the generic one
		}
		return withHint(fmt.Errorf("cannot reach the signaling server in %s's invite: %w", name, err),
			"if %s made the invite without kin up running, it works only while their kin invite runs (it stops once the invite is used or expires); ask them for a new one", name)
	}
	defer l.Close()
	client, _, err := dial(ctx, l, t.Peer, t.Secret, "", name)
	if err != nil {
		if err := expired(); err != nil {
			return err
		}
		if errors.Is(err, session.ErrAuthRefused) {
			return withHint(fmt.Errorf("%s does not know this invite (it was made by a kin that has stopped, or is not %s's)", name, name), "ask %s for a new invite", name)
		}
		return err
	}
	defer client.Close()
	j, err := client.Join(ctx)
	switch {
	case errors.Is(err, keys.ErrInviteUsed), errors.Is(err, keys.ErrInviteExpired), errors.Is(err, keys.ErrInviteRevoked), errors.Is(err, keys.ErrInviteUnknown):
		return withHint(err, "ask %s for a new invite (kin invite)", name)
	case errors.Is(err, session.ErrJoinRefused):
		return withHint(err, "ask %s about it", name)
	case err != nil:
		return withHint(fmt.Errorf("join %s: %w", name, err), "run the same kin join again")
	}
	client.Close()

	fmt.Fprintf(e.stdout, "%s added you to their friends as %q; you may use on their computer: %s\n", name, j.Name, j.Perms)
	if known {
		fmt.Fprintf(e.stdout, "%s was already your friend; nothing changed in your friends file\n", name)
	} else {
		fr := keys.Friend{Name: name, Key: t.Peer}
		if err := keys.AddFriend(e.friendsPath(), fr); err != nil {
			return withHint(fmt.Errorf("you joined, but adding %s to your friends failed: %w", name, err), `add them yourself: kin friends add %s "%s"`, name, keys.FormatKey(t.Peer))
		}
		fmt.Fprintf(e.stdout, "added %s (%s) to your friends, allowed: nothing (you can allow them things later)\n", name, fr.ID())
	}
	switch {
	case e.signal == "":
		fmt.Fprintf(e.stderr, "note: to reach %s later, you both need the same signaling server: set KIN_SIGNAL (this invite came through %s)\n", name, t.Signal)
	case e.signal != t.Signal:
		fmt.Fprintf(e.stderr, "note: %s's invite came through the signaling server %s, but yours is %s; to reach %s you need the same one\n", name, t.Signal, e.signal, name)
	}
	if j.Perms.Shell {
		fmt.Fprintf(e.stderr, "try: kin shell %s\n", name)
	}
	return nil
}
