package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"kin/keys"
)

func pipeCommand() *cli.Command {
	return &cli.Command{
		Name:      "pipe",
		Usage:     "connect stdin/stdout to a friend's kin, for OpenSSH's ProxyCommand",
		ArgsUsage: "FRIEND",
		Description: `Lets the real OpenSSH tools reach a friend who runs "kin up":
    ssh -o ProxyCommand='kin pipe %h' dad
    scp -o ProxyCommand='kin pipe %h' photo.jpg dad:
"kin ssh-config" prints a ready ~/.ssh/config block with the friend's host
key, so OpenSSH checks it is really them.`,
		Action: pipeAction,
	}
}

func pipeAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(errors.New("pipe needs a friend's name"), "ssh -o ProxyCommand='kin pipe %%h' dad")
	}
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	fr, p, err := reachFriend(c.Context, e, c.Args().First())
	if err != nil {
		return err
	}
	defer p.close()
	ctx, cancel := context.WithTimeout(c.Context, connectTimeout)
	conn, _, err := p.raw(ctx, fr.ID(), "")
	cancel()
	if err != nil {
		return withHint(fmt.Errorf("connect to %s: %w", fr.Name, err), "is %s running kin up?", fr.Name)
	}
	defer conn.Close()
	// OpenSSH checks the host key itself (kin ssh-config gives it the line).
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, c.App.Reader)
		done <- err
	}()
	go func() {
		_, err := io.Copy(e.stdout, conn)
		done <- err
	}()
	select {
	case <-done:
	case <-c.Context.Done():
	}
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
		Action: sshConfig,
	}
}

func sshConfig(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	friends, err := e.loadFriends()
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
	var lines []string
	for _, fr := range friends.List() {
		lines = append(lines, "kin-"+fr.Name+" "+keys.FormatKey(fr.Key))
	}
	if err := writeFile(known, strings.Join(lines, "\n")+"\n"); err != nil {
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
		fmt.Fprintf(e.stdout, "Host %s\n  HostName %s\n  HostKeyAlias kin-%s\n  ProxyCommand env %s %s pipe %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  IdentityFile %s\n  IdentitiesOnly yes\n\n",
			fr.Name, fr.Name, fr.Name, env, self, fr.Name, known, identity)
	}
	return nil
}
