// Package cmd is kin's command line: the commands, their flags and help,
// and how results and errors are shown to a person.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"kin/keys"
)

// Main runs kin with args (including the program name) and returns the
// process exit code.
func Main(args []string) int {
	defer startProfiles()()
	go exitSoonAfterSignal(os.Stderr)
	return run(context.Background(), args, os.Stdin, os.Stdout, os.Stderr)
}

// stopGrace is how long a command has, after Ctrl-C or SIGTERM, to stop
// by itself (closing connections, telling the peer) before kin exits
// anyway: whatever it waits on (a read from a pipe nobody writes, a peer
// that does not answer) cannot keep it running.
const stopGrace = 1800 * time.Millisecond

// exitSoonAfterSignal ends the process stopGrace after the first Ctrl-C or
// SIGTERM, or at once on a second one. run cancels the command's context
// on the same signals; this is the backstop for what does not watch it.
func exitSoonAfterSignal(stderr io.Writer) {
	sigs := make(chan os.Signal, 2)
	ossignal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	first := <-sigs
	select {
	case <-sigs:
	case <-time.After(stopGrace):
		fmt.Fprintln(stderr, "kin: stopped")
	}
	code := 130 // 128 + SIGINT, as shells report it
	if first == syscall.SIGTERM {
		code = 143
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := ossignal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdin, stdout, stderr)
	var err error
	if keys.LooksLikePrivateKey(strings.Join(args, " ")) { // " ": pasted unquoted, the shell splits it
		err = errPrivateKey // refused before the flag parser can echo it
	} else {
		err = app.RunContext(ctx, reorderArgs(app, args))
	}
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.Error() == "" {
		return ec.ExitCode()
	}
	printError(stderr, err)
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// errPrivateKey refuses a private key given as an argument, without
// showing any of it.
var errPrivateKey = withHint(errors.New("one of the arguments is a private key, which must never leave its computer; kin did not use or show it"),
	"a friend needs your public key: `kin id` prints it (one line, ssh-ed25519 AAAA...). "+
		"To add a friend, paste the line their `kin id` prints. Remove the private key from your shell history")

// hinted is an error with advice on what to do next.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// withHint attaches advice to err. A nil err stays nil.
func withHint(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: fmt.Sprintf(format, a...)}
}

func printError(w io.Writer, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(w, "kin: %s\n", msg)
	var h *hinted
	if errors.As(err, &h) && h.hint != "" {
		fmt.Fprintf(w, "hint: %s\n", h.hint)
	}
}

// isTerminal reports whether w is a terminal, to choose between
// interactive and plain output.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// newTimedLogger logs with times, for long-running agents.
func newTimedLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// newLogger logs for commands a person runs and watches (share, send,
// connect...): what they read there are the commands' own sentences, so
// only warnings and errors are logged, unless --verbose asks for it all.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 && !verbose {
				return slog.Attr{} // people read these; times only help when debugging
			}
			return a
		},
	}))
}

// reorderArgs moves a (sub)command's flags in front of its positional
// arguments, so `kin connect TICKET --listen ADDR` works as people type it.
// urfave/cli/v2 stops parsing flags at the first positional argument.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	flags := app.Flags
	cmds := app.Commands
	for {
		// Copy leading flags of this level.
		for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
			out = append(out, args[i])
			if takesValue(flags, args[i]) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
		}
		if i >= len(args) {
			return out
		}
		c := findCommand(cmds, args[i])
		if c == nil {
			return append(out, args[i:]...)
		}
		out = append(out, args[i])
		i++
		if len(c.Subcommands) > 0 {
			flags, cmds = c.Flags, c.Subcommands
			continue
		}
		var fl, pos []string
		for i < len(args) {
			a := args[i]
			if a == "--" {
				pos = append(pos, args[i:]...)
				break
			}
			if strings.HasPrefix(a, "-") && len(a) > 1 {
				fl = append(fl, a)
				if takesValue(c.Flags, a) && i+1 < len(args) {
					fl = append(fl, args[i+1])
					i++
				}
			} else {
				pos = append(pos, a)
			}
			i++
		}
		out = append(out, fl...)
		return append(out, pos...)
	}
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag token a (like "--listen" or "-v")
// names a flag that takes a separate value.
func takesValue(flags []cli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if bf, ok := f.(*cli.BoolFlag); ok && bf != nil {
				return false
			}
			return true
		}
	}
	return false
}
