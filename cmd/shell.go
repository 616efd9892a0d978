package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	ossignal "os/signal"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"kin/keys"
	"kin/session"
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

// reachFriend looks a friend up and gets ready to dial them (through the
// agent, or registered ourselves); the caller closes the link.
func reachFriend(ctx context.Context, e *env, name string) (keys.Friend, *link, error) {
	fr, err := friendByName(e, name)
	if err != nil {
		return fr, nil, err
	}
	id, err := e.loadIdentity()
	if err != nil {
		return fr, nil, err
	}
	l, err := reach(ctx, e, id, e.signal)
	return fr, l, err
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
	command := commandLine(rest)
	fr, p, err := reachFriend(c.Context, e, name)
	if err != nil {
		return err
	}
	defer p.close()
	client, _, err := p.dial(c.Context, e, fr.Key, nil, "", fr.Name)
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		if errors.Is(err, session.ErrShellNotAllowed) && strings.Contains(err.Error(), rootShellOff) {
			return withHint(err, "ask %s to run kin up as their own user rather than root", fr.Name)
		}
		if errors.Is(err, session.ErrShellNotAllowed) {
			return withHint(err, "ask %s to allow you a shell: permit-shell in their friends file", fr.Name)
		}
		return err
	}
	defer s.Close()
	code, err := runRemote(c.Context, s, command, c.App.Reader, e.stdout, e.stderr)
	if err != nil {
		return fmt.Errorf("shell on %s: %w", fr.Name, err)
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

// runRemote runs a shell (command == "") or a command in s, with a
// terminal when stdin and stdout are terminals, and returns its exit code.
func runRemote(ctx context.Context, s *ssh.Session, command string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s.Stdout, s.Stderr = stdout, stderr
	in, inTTY := stdin.(*os.File)
	out, outTTY := stdout.(*os.File)
	tty := inTTY && outTTY && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd()))
	if tty {
		w, h, err := term.GetSize(int(out.Fd()))
		if err != nil {
			w, h = 80, 24
		}
		t := os.Getenv("TERM")
		if t == "" {
			t = "xterm-256color"
		}
		if err := s.RequestPty(t, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return 0, fmt.Errorf("request a terminal: %w", err)
		}
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return 0, fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(int(in.Fd()), old) // on every way out
		stop := watchResize(int(out.Fd()), s)
		defer stop()
	}
	// stdin is copied by hand: a blocked read of a terminal must not keep
	// us from returning when the remote side is done.
	w, err := s.StdinPipe()
	if err != nil {
		return 0, err
	}
	go func() {
		io.Copy(w, stdin)
		w.Close()
	}()
	if command == "" {
		err = s.Shell()
	} else {
		err = s.Start(command)
	}
	if err != nil {
		return 255, fmt.Errorf("the connection was lost before the command started: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	if !tty {
		// Without a terminal, Ctrl-C here is passed on as a signal.
		sigs := make(chan os.Signal, 1)
		ossignal.Notify(sigs, os.Interrupt)
		defer ossignal.Stop(sigs)
		go func() {
			for range sigs {
				s.Signal(ssh.SIGINT)
			}
		}()
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		return 130, nil
	}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ee.Signal() != "" {
			return 128 + signalNumber(ee.Signal()), nil
		}
		return ee.ExitStatus(), nil
	case errors.As(err, &missing), errors.Is(err, io.EOF):
		return 255, errors.New("the connection was lost before the command finished (the remote side was cleaned up)")
	}
	return 255, fmt.Errorf("the connection was lost before the command finished: %w", err)
}

func signalNumber(name string) int {
	switch name {
	case "HUP":
		return 1
	case "INT":
		return 2
	case "QUIT":
		return 3
	case "KILL":
		return 9
	case "TERM":
		return 15
	}
	return 1
}

// commandLine joins a command's words for the remote shell: one word is
// taken as a shell line ("ls | wc -l"), several are quoted so that
// kin shell dad -- sh -c 'exit 7' means what it says.
func commandLine(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	q := make([]string, len(words))
	for i, w := range words {
		if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			q[i] = w
		} else {
			q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
