package cmd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/session/files"
	"kin/signal"
	"kin/transport/netcheck"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "is my agent up, which signaling server, which friends are online",
		Description: `Asks the signaling server (--signal / KIN_SIGNAL) who is online: your own
key (your "kin up" agent) and each friend. It registers with a throw-away
key, so it never takes connections meant for your agent. It also says
whether unfinished transfers wait in your inbox (--dir, as for kin up and
kin receive), and what each friend may use on this computer.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "the inbox to look at (default: ~/Downloads/kin)"},
		},
		Action: statusAction,
	}
}

func statusAction(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	id, friends, err := e.loadIdentityAndFriends()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "you:       %s (%s)\n", id.ID(), e.home)
	fmt.Fprintf(e.stdout, "inbox:     %s\n", inboxState(&files.Inbox{Dir: inboxDir(c)}))
	if e.signal == "" {
		fmt.Fprintln(e.stdout, "signaling: none configured (kin share and kin send run their own; set KIN_SIGNAL for friends)")
		return printFriends(e, friends, nil)
	}
	ctx, cancel := context.WithTimeout(c.Context, signalTimeout)
	defer cancel()
	ids := []keys.PeerID{id.ID()}
	for _, f := range friends.List() {
		ids = append(ids, f.ID())
	}
	reg, online, err := signal.AskOnline(ctx, e.signal, e.log, ids...)
	if reg.ID == "" {
		fmt.Fprintf(e.stdout, "signaling: %s: unreachable\n", e.signal)
		return withHint(err, "check the URL, and that the server runs")
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "signaling: %s: reachable\n", e.signal)
	if r, err := netcheck.Check(ctx, netcheck.STUNOnly(reg.ICEServers)); err == nil {
		fmt.Fprintf(e.stdout, "network:   NAT %s: %s (details: kin doctor)\n", r.NAT, r.NAT.Advice())
	}
	if online[id.ID()] {
		fmt.Fprintln(e.stdout, "agent:     up (your key is registered: kin up, or kin share/send, runs somewhere)")
	} else {
		fmt.Fprintln(e.stdout, "agent:     down (start it with kin up, or kin up --install)")
	}
	return printFriends(e, friends, online)
}

// printFriends lists friends, whether they are online (unknown when online
// is nil: no signaling server to ask) and what each may use here.
func printFriends(e *env, friends *keys.Friends, online map[keys.PeerID]bool) error {
	if len(friends.List()) == 0 {
		fmt.Fprintln(e.stdout, "friends:   none yet")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FRIEND\tONLINE\tMAY USE ON THIS COMPUTER")
	for _, f := range friends.List() {
		state := "no"
		switch {
		case online == nil:
			state = "?"
		case online[f.ID()]:
			state = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, state, mayUse(f.Perms))
	}
	return tw.Flush()
}

// mayUse says in words what a friend's permissions let them use on this
// computer.
func mayUse(p keys.Permissions) string {
	var w []string
	for _, word := range strings.Split(p.String(), ",") {
		switch {
		case word == "shell":
			w = append(w, "shell")
		case word == "files":
			w = append(w, "files (send you files, back up here)")
		case word == "port=*":
			w = append(w, "any port")
		case strings.HasPrefix(word, "port="):
			w = append(w, "port "+strings.TrimPrefix(word, "port="))
		}
	}
	if len(w) == 0 {
		return "nothing (you can still use theirs, as far as they allow you)"
	}
	return strings.Join(w, ", ")
}

// inboxState says where files from friends land and what unfinished
// transfers hold there.
func inboxState(in *files.Inbox) string {
	n, size, err := in.Partials()
	switch {
	case err != nil:
		return fmt.Sprintf("%s: cannot look inside: %v", in.Dir, err)
	case n == 0:
		return in.Dir + ": no unfinished files"
	}
	return fmt.Sprintf("%s: %s hold %s in %s (sending them again resumes them; removed after %d days)",
		in.Dir, plural(n, "unfinished file"), humanBytes(size), filepath.Join(in.Dir, ".kin-partial"), int(files.PartialMaxAge.Hours()/24))
}
