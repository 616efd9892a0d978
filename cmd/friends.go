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
    name="bob",permit-port=3000 ssh-ed25519 AAAA... bob@laptop`,
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a friend by name and public key",
				ArgsUsage: `NAME "ssh-ed25519 AAAA..."`,
				Description: `NAME is how you will call them (kin connect NAME:PORT). The key is the line
their "kin id" prints. --allow says what they may reach on your machine:
    --allow port=3000     that TCP port, when you share it (repeatable)
    --allow port=*        any port you share
    --allow shell         a shell (kin up / kin shell)
    --allow files         sending you files, and backups (sftp, restic) into a
                          folder of their own when you run kin up
A friend added with no --allow can still be connected TO by you.`,
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "allow", Usage: "what the friend may do: port=N, port=*, shell, files (repeatable)"},
				},
				Action: friendsAdd,
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list your friends and what they may do",
				Action:  friendsList,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove"},
				Usage:     "remove a friend",
				ArgsUsage: "NAME",
				Action:    friendsRemove,
			},
		},
	}
}

func friendsAdd(c *cli.Context) error {
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
	keyText := strings.Join(c.Args().Slice()[1:], " ")
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
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	if err := friends.Add(fr); err != nil {
		return err
	}
	if err := friends.WriteFile(e.friendsPath()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "added %s (%s), allowed: %s\n", fr.Name, fr.ID(), fr.Perms)
	return nil
}

func friendsList(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	list := friends.List()
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

func friendsRemove(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("friends rm needs one name"), "kin friends rm bob")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	if err := friends.Remove(c.Args().First()); err != nil {
		return err
	}
	if err := friends.WriteFile(e.friendsPath()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s\n", c.Args().First())
	return nil
}
