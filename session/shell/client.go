package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	ossignal "os/signal"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// Run runs a shell (command == "") or a command in s, the client side of
// a session channel, with a terminal when stdin and stdout are terminals,
// and returns its exit code.
func Run(ctx context.Context, s *ssh.Session, command string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
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

// CommandLine joins a command's words for the remote shell: one word is
// taken as a shell line ("ls | wc -l"), several are quoted so that
// kin shell dad -- sh -c 'exit 7' means what it says.
func CommandLine(words []string) string {
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
