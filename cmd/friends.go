package cmd

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"kin/keys"
)

func friendsCommand() *cli.Command {
	return &cli.Command{
		Name:  "friends",
		Usage: "add, list and remove the people who may connect to you",
		Description: `Friends live in KIN_HOME/friends, an authorized_keys file you can also edit
by hand. Each line names a friend and says what they may do:
    name="bob",permit-port=3000,permit-port=30000/udp ssh-ed25519 AAAA... bob@laptop
A line kin cannot read is skipped with a warning that names it; the other
lines apply.`,
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a friend by name and public key",
				ArgsUsage: `NAME "ssh-ed25519 AAAA..."`,
				Description: `NAME is how you will call them (kin connect NAME:PORT). The key is the line
their "kin id" prints. --allow says what they may reach on your machine:
    --allow port=3000     that TCP port, when you share it (repeatable)
    --allow port=30000/udp  that UDP port (game servers, DNS)
    --allow port=*        any port you share, TCP and UDP
    --allow shell         a shell (kin up / kin shell)
    --allow files         sending you files, and backups (sftp, restic) into a
                          folder of their own when you run kin up
A friend added with no --allow can still be connected TO by you.`,
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "allow", Usage: "what the friend may do: port=N, port=N/udp, port=*, shell, files (repeatable)"},
				},
				Action: friendsAddAction,
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list your friends and what they may do",
				Action:  friendsListAction,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove"},
				Usage:     "remove a friend (also a line kin skips, if it names them)",
				ArgsUsage: "NAME",
				Action:    friendsRemoveAction,
			},
			{
				Name:      "allow",
				Usage:     "let a friend do more: shell, files, port=N, port=N/udp, port=*",
				ArgsUsage: "NAME shell|files|port=N|port=N/udp|port=* ...",
				Description: `Adds to what a friend may do, changing only their line of the friends file:
    kin friends allow bob shell port=3000
    kin friends allow bob port=30000/udp     (a UDP port: permit-port=30000/udp)
port=* is every port, TCP and UDP.`,
				Action: friendsAllowAction,
			},
			{
				Name:      "deny",
				Usage:     "let a friend do less: shell, files, port=N, port=N/udp, port=* (every port)",
				ArgsUsage: "NAME shell|files|port=N|port=N/udp|port=* ...",
				Description: `Takes away what a friend may do, changing only their line of the friends
file. Their open connections close, and reconnect with what is left:
    kin friends deny bob shell port=*`,
				Action: friendsDenyAction,
			},
		},
	}
}

func friendsAddAction(c *cli.Context) error {
	if c.NArg() < 2 {
		return withHint(errors.New("friends add needs a name and a public key"), `kin friends add bob "ssh-ed25519 AAAA... bob@laptop"`)
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	name := c.Args().First()
	if err := keys.ValidName(name); err != nil {
		return err
	}
	keyText := strings.TrimSpace(strings.Join(c.Args().Slice()[1:], " "))
	if keys.LooksLikePrivateKey(keyText) { // run refuses these first; this guards other callers
		return errPrivateKey
	}
	if strings.Contains(keyText, "\n") {
		return withHint(errors.New("that is more than one line"), `paste the one line your friend's "kin id" printed, in quotes`)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(keyText))
	if err != nil {
		return withHint(fmt.Errorf("that is not a public key: %w", err), `paste the whole line your friend's "kin id" printed, in quotes`)
	}
	fr := keys.Friend{Name: name, Key: pub, Comment: comment}
	for _, a := range c.StringSlice("allow") {
		if err := fr.Perms.ParsePermission(a); err != nil {
			return err
		}
	}
	friends, err := e.editFriends()
	if err != nil {
		return err
	}
	if _, ok := friends.ByName(name); ok {
		return withHint(fmt.Errorf("there is already a friend named %q", name),
			"remove them first with `kin friends rm %s`, or change what they may do with `kin friends allow` or `deny`", name)
	}
	if err := friends.Add(fr); err != nil {
		return err
	}
	if err := friends.WriteFile(e.friendsPath()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "added %s (%s), allowed: %s\n", fr.Name, fr.ID(), fr.Perms)
	e.warnSkipped(friends.Skipped())
	return nil
}

// editFriends reads the friends file to change it. Warnings about skipped
// lines wait until the change is made (it may remove them); the lines
// themselves are written back as they are.
func (e *env) editFriends() (*keys.Friends, error) {
	f, _, err := keys.ReadFriends(e.friendsPath())
	return f, withHint(err, "check that %s is a readable file", e.friendsPath())
}

func friendsListAction(c *cli.Context) error {
	e, friends, err := getEnvAnd(c, (*env).loadFriends)
	if err != nil {
		return err
	}
	list := friends.List()
	if len(list) == 0 && len(friends.Skipped()) > 0 {
		fmt.Fprintln(e.stderr, "no friends: kin skips every line of the friends file (see the warnings above)")
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintf(e.stderr, "no friends yet; add one with: kin friends add NAME \"ssh-ed25519 AAAA...\"\n")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tALLOWED")
	for _, f := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, f.ID(), f.Perms)
	}
	return tw.Flush()
}

func friendsRemoveAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("friends rm needs one name"), "kin friends rm bob")
	}
	e, friends, err := getEnvAnd(c, (*env).editFriends)
	if err != nil {
		return err
	}
	if err := friends.Remove(c.Args().First()); err != nil {
		return withHint(err, "see `kin friends ls`")
	}
	if err := friends.WriteFile(e.friendsPath()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s\n", c.Args().First())
	e.warnSkipped(friends.Skipped())
	return nil
}

func friendsAllowAction(c *cli.Context) error { return friendsChange(c, true) }
func friendsDenyAction(c *cli.Context) error  { return friendsChange(c, false) }

// friendsChange is kin friends allow (grant) and deny (!grant).
func friendsChange(c *cli.Context, grant bool) error {
	verb := map[bool]string{true: "allow", false: "deny"}[grant]
	if c.NArg() < 2 {
		return withHint(fmt.Errorf("friends %s needs a name and what to %s", verb, verb), "kin friends %s bob shell files port=3000 port=*", verb)
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	name := c.Args().First()
	var words keys.Permissions
	for _, w := range c.Args().Slice()[1:] {
		if err := words.ParsePermission(w); err != nil {
			return err
		}
	}
	friends, err := e.editFriends()
	if err != nil {
		return err
	}
	fr, ok := friends.ByName(name)
	if !ok {
		// SetPerms says why: no such friend, or their line is skipped.
		err := friends.SetPerms(name, keys.Permissions{})
		if errors.Is(err, keys.ErrNoFriend) {
			return withHint(err, "see `kin friends ls`")
		}
		return withHint(err, "fix that line in %s first", e.friendsPath())
	}
	perms := fr.Perms
	if grant {
		perms.Grant(words)
	} else if err := perms.Revoke(words); err != nil {
		return withHint(err, "kin friends deny %s port=*, then allow the ports they may use", fr.Name)
	}
	if perms.String() != fr.Perms.String() {
		if err := friends.SetPerms(fr.Name, perms); err != nil {
			return err
		}
		if err := friends.WriteFile(e.friendsPath()); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "%s may now: %s\n", fr.Name, perms)
	e.warnSkipped(friends.Skipped())
	return nil
}
