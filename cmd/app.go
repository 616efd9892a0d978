package cmd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/signal"
)

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "kin",
		Usage:   "connect to the computers of people you know, by their SSH keys",
		Version: versionString(),
		Description: `kin connects two computers directly, through home routers and NATs, with
no accounts and no port forwarding. A peer is its SSH key: friends know each
other's public keys, and everything runs over SSH on the path WebRTC opens.

Share a port with anyone, using a ticket:
    kin share 3000                  prints: kin connect kin1...
    kin connect kin1...             the other person gets localhost:3000

Or with friends, by name:
    kin invite bob --allow port=3000    prints: kin join kin1... (bob runs it)
    kin connect alice:3000          (bob, now that alice is his friend)

Try it all on this machine:
    kin demo`,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "home", EnvVars: []string{"KIN_HOME"}, Usage: "directory holding your identity, friends file and config (default: the OS config dir + /kin)"},
			&cli.StringFlag{Name: "identity", EnvVars: []string{"KIN_IDENTITY"}, Usage: "use this OpenSSH private key as your identity (e.g. ~/.ssh/id_ed25519) instead of HOME/identity"},
			&cli.StringFlag{Name: "signal", EnvVars: []string{"KIN_SIGNAL"}, Usage: "signaling server URL, e.g. wss://signal.example.org (default: kin share runs one itself)"},
			&cli.StringFlag{Name: "ice-interfaces", EnvVars: []string{"KIN_ICE_INTERFACES"}, Usage: "comma-separated network interfaces WebRTC may use, e.g. lo (default: all)"},
			&cli.BoolFlag{Name: "verbose", EnvVars: []string{"KIN_VERBOSE"}, Usage: "log what happens, for debugging"},
		},
		Commands: []*cli.Command{
			idCommand(),
			friendsCommand(),
			inviteCommand(),
			joinCommand(),
			shareCommand(),
			connectCommand(),
			sendCommand(),
			receiveCommand(),
			upCommand(),
			statusCommand(),
			shellCommand(),
			pipeCommand(),
			sshConfigCommand(),
			signalCommand(),
			demoCommand(),
			doctorCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // Main prints errors itself
	}
}

// env is what every command reads from the global flags.
type env struct {
	home       string
	identity   string
	signal     string
	interfaces []string
	log        *slog.Logger
	stdout     io.Writer
	stderr     io.Writer
}

func getEnv(c *cli.Context) (*env, error) {
	e := &env{
		home:     c.String("home"),
		identity: c.String("identity"),
		stdout:   c.App.Writer,
		stderr:   c.App.ErrWriter,
	}
	signalURL, err := signal.ParseURL(c.String("signal"))
	if err != nil {
		return nil, withHint(err, "write KIN_SIGNAL (or --signal) as ws://HOST:PORT, e.g. ws://192.168.1.20:7000, or wss://HOST for a server with TLS; kin signal prints the address to use")
	}
	e.signal = signalURL
	e.log = newLogger(e.stderr, c.Bool("verbose"))
	if e.home == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, withHint(fmt.Errorf("find config dir: %w", err), "set KIN_HOME to a directory kin may use")
		}
		e.home = filepath.Join(dir, "kin")
	}
	for _, name := range strings.Split(c.String("ice-interfaces"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			e.interfaces = append(e.interfaces, name)
		}
	}
	return e, nil
}

// errNoSignal is returned by commands that need a signaling server shared
// with friends when none is configured.
var errNoSignal = errors.New("no signaling server configured")

// noSignal is errNoSignal with the one hint every command gives; alt, when
// not empty, is what the command can do without a server.
func noSignal(alt string) error {
	hint := "set the server you and your friends use, e.g. KIN_SIGNAL=ws://HOST:7000 (or --signal): one of you runs it with kin signal"
	if alt != "" {
		hint += "; or " + alt
	}
	return withHint(errNoSignal, "%s", hint)
}

func (e *env) friendsPath() string { return filepath.Join(e.home, "friends") }

// loadIdentity reads the identity, creating one under home on first use.
// An explicit --identity must exist.
func (e *env) loadIdentity() (*keys.Identity, error) {
	if e.identity != "" {
		id, err := keys.LoadIdentity(e.identity)
		return id, withHint(err, "--identity must name an existing unencrypted OpenSSH private key")
	}
	path := filepath.Join(e.home, "identity")
	id, created, err := keys.LoadOrCreateIdentity(path)
	if err != nil {
		return nil, withHint(err, "check that %s is readable, or move it away to make a new identity", path)
	}
	if created {
		// People read this once, on their first command: a sentence, not a log line.
		fmt.Fprintf(e.stderr, "kin made you a new identity, kin ID %s, kept in %s (the private key never leaves this computer)\n", id.ID(), path)
	}
	return id, nil
}

// getEnvAnd is getEnv, then what load reads with it, e.g. the identity
// ((*env).loadIdentity) or the friends file ((*env).loadFriends).
func getEnvAnd[T any](c *cli.Context, load func(*env) (T, error)) (*env, T, error) {
	e, err := getEnv(c)
	if err != nil {
		var none T
		return nil, none, err
	}
	v, err := load(e)
	return e, v, err
}

// loadIdentityAndFriends is loadIdentity, then loadFriends.
func (e *env) loadIdentityAndFriends() (*keys.Identity, *keys.Friends, error) {
	id, err := e.loadIdentity()
	if err != nil {
		return nil, nil, err
	}
	f, err := e.loadFriends()
	return id, f, err
}

// loadFriends reads the friends file for a command that runs once. Lines
// that do not parse are skipped with a warning; only a file that cannot
// be read is an error.
func (e *env) loadFriends() (*keys.Friends, error) {
	f, skipped, err := keys.ReadFriends(e.friendsPath())
	if err != nil {
		return nil, withHint(err, "check that %s is a readable file", e.friendsPath())
	}
	e.warnSkipped(skipped)
	return f, nil
}

// warnSkipped tells the user which lines of the friends file kin skips.
func (e *env) warnSkipped(skipped []keys.LineError) {
	for _, le := range skipped {
		fix := "fix or delete it in a text editor"
		if le.Name != "" {
			fix += ", or remove it with: kin friends rm " + le.Name
		}
		fmt.Fprintf(e.stderr, "warning: %s line %d is skipped: %v (%s)\n", e.friendsPath(), le.Line, le.Err, fix)
	}
}

// watchFriends opens the friends file for a server that runs a while
// (see keys.WatchFriends), logging to this command's log.
func (e *env) watchFriends() (*keys.FriendsFile, *keys.Friends, error) {
	ff, f, err := keys.WatchFriends(e.friendsPath(), e.log)
	return ff, f, withHint(err, "check that %s is a readable file", e.friendsPath())
}

// displayName is what others see of us in tickets: the login name.
func displayName() string {
	for _, v := range []string{"USER", "USERNAME", "LOGNAME"} {
		if n := os.Getenv(v); n != "" && keys.ValidName(n) == nil {
			return n
		}
	}
	return "kin"
}

// inboxDir is where received files go: --dir, or the user's Downloads/kin.
func inboxDir(c *cli.Context) string { return flagOrHome(c, "dir", "kin-inbox", "Downloads", "kin") }

// backupsDir holds the sftp folders of friends who may send files but not
// run commands: --backups, or ~/kin-backups. Folders are made on first use.
func backupsDir(c *cli.Context) string { return flagOrHome(c, "backups", "kin-backups", "kin-backups") }

// flagOrHome is the directory the flag names, or else the path under the
// user's home directory (fallback when there is none).
func flagOrHome(c *cli.Context, flag, fallback string, path ...string) string {
	if dir := c.String(flag); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return fallback
	}
	return filepath.Join(append([]string{home}, path...)...)
}
