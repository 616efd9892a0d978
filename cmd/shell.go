package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/session"
	"kin/session/shell"
)

func shellCommand() *cli.Command {
	return &cli.Command{
		Name:      "shell",
		Usage:     "open a shell on a friend's computer, or run one command there",
		ArgsUsage: "FRIEND [-- COMMAND...]",
		Description: `The friend runs "kin up" and allows you a shell (permit-shell):
    kin shell dad                 a terminal on dad's computer (vim, top work)
    kin shell dad -- df -h        one command; its exit code comes back
    echo ls | kin shell dad       commands from a pipe`,
		Action: shellAction,
	}
}

// friendByName looks a friend up, with the error people need.
func friendByName(e *env, name string) (keys.Friend, error) {
	friends, err := e.loadFriends()
	if err != nil {
		return keys.Friend{}, err
	}
	fr, ok := friends.ByName(name)
	if !ok {
		return keys.Friend{}, withHint(fmt.Errorf("you have no friend named %q", name), `add them with: kin friends add %s "ssh-ed25519 AAAA..." (see kin friends ls)`, name)
	}
	if e.signal == "" {
		return keys.Friend{}, noSignal("")
	}
	return fr, nil
}

// dialFriend looks the friend called name up, reaches them (through the
// agent, or registered ourselves) and runs the SSH handshake, which pins
// their key: an impostor the signaling server sent us to fails here.
// hangUp closes the connection and the link.
func dialFriend(ctx context.Context, e *env, name string) (fr keys.Friend, client *session.Client, hangUp func(), err error) {
	if fr, err = friendByName(e, name); err != nil {
		return fr, nil, nil, err
	}
	id, err := e.loadIdentity()
	if err != nil {
		return fr, nil, nil, err
	}
	l, err := reach(ctx, e, id, e.signal)
	if err != nil {
		return fr, nil, nil, err
	}
	if client, _, err = dial(ctx, l, fr.Key, nil, "", fr.Name); err != nil {
		l.Close()
		return fr, nil, nil, err
	}
	return fr, client, func() { client.Close(); l.Close() }, nil
}

func shellAction(c *cli.Context) error {
	if c.NArg() < 1 {
		return withHint(errors.New("shell needs a friend's name"), "kin shell dad   or   kin shell dad -- df -h")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	args := c.Args().Slice()
	name, rest := args[0], args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	command := shell.CommandLine(rest)
	fr, client, hangUp, err := dialFriend(c.Context, e, name)
	if err != nil {
		return err
	}
	defer hangUp()
	s, err := client.NewSession()
	if err != nil {
		if errors.Is(err, session.ErrShellOff) {
			return withHint(err, "ask %s to run kin up as their own user rather than root", fr.Name)
		}
		if errors.Is(err, session.ErrShellNotAllowed) {
			return withHint(err, "ask %s to allow you a shell: permit-shell in their friends file", fr.Name)
		}
		return err
	}
	defer s.Close()
	code, err := shell.Run(c.Context, s, command, c.App.Reader, e.stdout, e.stderr)
	if err != nil {
		return fmt.Errorf("shell on %s: %w", fr.Name, err)
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}
