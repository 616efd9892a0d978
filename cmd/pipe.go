package cmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/session"
)

func pipeCommand() *cli.Command {
	return &cli.Command{
		Name:      "pipe",
		Usage:     "connect stdin/stdout to a friend's kin, for OpenSSH (set up by kin ssh-config)",
		ArgsUsage: "FRIEND",
		Description: `Lets the real OpenSSH tools (ssh, scp, sftp, rsync) reach a friend who runs
"kin up". Set it up once with kin ssh-config, which writes the ProxyCommand
and the friend's host key for OpenSSH:
    kin ssh-config dad >> ~/.ssh/config
    ssh dad
    scp photo.jpg dad:
kin pipe checks the friend's key itself, like every other kin command: the
OpenSSH connection runs inside a kin connection to the key in your friends
file, so nothing OpenSSH sends reaches anyone else.`,
		Action: pipeAction,
	}
}

func pipeAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("pipe needs a friend's name"), "kin ssh-config dad >> ~/.ssh/config, then: ssh dad")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	// The SSH handshake pins the friend's key: an impostor the signaling
	// server sent us to fails there, before OpenSSH's first byte.
	fr, client, hangUp, err := dialFriend(c.Context, e, c.Args().First())
	if err != nil {
		return err
	}
	defer hangUp()
	conn, err := client.Pipe(c.Context)
	if err != nil {
		if errors.Is(err, session.ErrPipeNotAllowed) {
			return withHint(err, "ask %s to update kin and run kin up", fr.Name)
		}
		return fmt.Errorf("pipe to %s: %w", fr.Name, err)
	}
	defer conn.Close()
	session.Splice(c.Context, conn, c.App.Reader, e.stdout) // its only error is ctx's: Ctrl-C
	return nil
}

func sshConfigCommand() *cli.Command {
	return &cli.Command{
		Name:      "ssh-config",
		Usage:     "print ~/.ssh/config blocks so ssh, scp and sftp reach friends through kin",
		ArgsUsage: "[FRIEND...]",
		Description: `Writes KIN_HOME/known_hosts with your friends' keys (their kin identity is
their SSH host key) and prints a Host block per friend, e.g.:
    kin ssh-config dad >> ~/.ssh/config
    ssh dad`,
		Action: sshConfigAction,
	}
}

func sshConfigAction(c *cli.Context) error {
	e, friends, err := getEnvAnd(c, (*env).loadFriends)
	if err != nil {
		return err
	}
	list := friends.List()
	if c.NArg() > 0 {
		list = list[:0]
		for _, n := range c.Args().Slice() {
			fr, ok := friends.ByName(n)
			if !ok {
				return fmt.Errorf("you have no friend named %q", n)
			}
			list = append(list, fr)
		}
	}
	if len(list) == 0 {
		return withHint(errors.New("no friends to configure"), `kin friends add NAME "ssh-ed25519 AAAA..."`)
	}
	self, err := os.Executable()
	if err != nil {
		self = "kin"
	}
	known := filepath.Join(e.home, "known_hosts")
	if err := keys.WriteKnownHosts(known, friends); err != nil {
		return err
	}
	identity := e.identity
	if identity == "" {
		identity = filepath.Join(e.home, "identity")
	}
	env := "KIN_HOME=" + e.home
	if e.signal != "" {
		env += " KIN_SIGNAL=" + e.signal
	}
	for _, fr := range list {
		fmt.Fprintf(e.stdout, "Host %s\n  HostName %s\n  HostKeyAlias %s\n  ProxyCommand env %s %s pipe %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  IdentityFile %s\n  IdentitiesOnly yes\n\n",
			fr.Name, fr.Name, keys.HostAlias(fr.Name), env, self, fr.Name, known, identity)
	}
	return nil
}
