package cmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/session/files"
	"kin/session/shell"
	"kin/signal"
)

func upCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "stay reachable for friends: serve what each may use (shell, files, ports)",
		Description: `Runs the agent in the foreground: registered with the signaling server,
it lets each friend do what their line in the friends file allows:
    permit-shell      kin shell YOU, and OpenSSH's ssh/scp/sftp through kin pipe
    permit-files      kin send FILE YOU (into --dir, default ~/Downloads/kin),
                      and sftp (restic backups) in a folder of their own,
                      --backups/NAME (default ~/kin-backups/NAME), nothing else
    permit-port=N     kin connect YOU:N (or port=*)
    permit-port=N/udp kin connect YOU:N/udp (UDP to 127.0.0.1:N)
Edits to the friends file apply at once; removing a friend cuts their
sessions. Everything friends do is logged.

    kin up --install      run it as a per-user service, started at login
    kin up --uninstall    remove that service`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "where received files go (default: ~/Downloads/kin)"},
			&cli.StringFlag{Name: "backups", Usage: "where friends with permit-files but no shell keep backups over sftp, a folder each (default: ~/kin-backups)"},
			&cli.BoolFlag{Name: "install", Usage: "install kin up as a per-user service"},
			&cli.BoolFlag{Name: "uninstall", Usage: "remove the per-user service"},
			&cli.BoolFlag{Name: "allow-root-shell", Usage: "when kin up runs as root, give friends allowed a shell a ROOT shell (refused without it)"},
		},
		Action: upAction,
	}
}

func upAction(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	if c.Bool("install") || c.Bool("uninstall") {
		return installService(e, c.Bool("install"), c.String("dir"), c.String("backups"))
	}
	if e.signal == "" {
		return noSignal("")
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	dir := inboxDir(c)
	e.log = newTimedLogger(e.stderr, c.Bool("verbose"))
	friendsFile, friends, err := e.watchFriends()
	if err != nil {
		return err
	}
	inbox := &files.Inbox{Dir: dir}
	if err := inbox.Check(); err != nil {
		return withHint(err, "start kin up with --dir DIR, a folder you can write, for files friends send")
	}
	shells, shellOff := rootShells(e, c.Bool("allow-root-shell"))
	invites := session.InviteBook(e.invites(), e.friendsPath(), e.log, func(iv keys.Invite, fr keys.Friend) {
		e.log.Info(addedSentence(fr)+" (invite "+iv.ID+")", "who", fr.Name)
	})
	tuneGC()
	registered := false
	err = agent.Up(c.Context, agent.UpConfig{
		Home:  e.home,
		Peer:  e.peerConfig(id, e.signal, signal.ModeListen),
		Inbox: dir,
		Server: session.ServerConfig{
			Identity: id,
			Friends:  friendsFile.Get,
			AnyPort:  true,
			Invites:  invites,
			Inbox:    inbox,
			Shell:    shells,
			ShellOff: shellOff,
			Backups:  backupsDir(c),
			Files: session.FileHooks{
				Done: func(g session.Grant, _ bool, st files.Stats, err error) {
					for _, r := range st.Results {
						if r.Warning != "" {
							e.log.Warn("skipped", "from", g.Name, "why", r.Warning)
						} else if r.Error == "" {
							e.log.Info("file received", "from", g.Name, "name", r.Name)
						}
					}
				},
			},
			Logger: e.log,
		},
		Ready: func(*agent.Peer) {
			registered = true
			e.log.Info("kin is up", "id", id.ID(), "signal", e.signal, "friends", len(friends.List()), "inbox", dir, "backups", backupsDir(c))
		},
	})
	switch {
	case errors.Is(err, agent.ErrAlreadyRunning):
		return withHint(errors.New("kin up is already running for this identity"), "kin share, send, receive, connect and shell use it; stop it first to run another")
	case !registered:
		return registerAdvice(c.Context, err)
	}
	e.log.Info("kin is down")
	return serveAdvice(err)
}

// rootShells decides whether kin up serves shells: as root only with
// --allow-root-shell, since a friend's shell would be a root shell.
func rootShells(e *env, allowRoot bool) (*shell.Config, string) {
	if os.Geteuid() != 0 {
		if allowRoot {
			e.log.Info("--allow-root-shell has no effect: kin up does not run as root")
		}
		return &shell.Config{}, ""
	}
	if allowRoot {
		e.log.Warn("kin up runs as root with --allow-root-shell: every friend allowed a shell gets a ROOT shell on this machine")
		return &shell.Config{}, ""
	}
	e.log.Warn("kin up runs as root: friends allowed a shell are refused it (a root shell); run kin up as your own user, or pass --allow-root-shell if you mean it")
	return nil, "this kin runs as root and gives no root shells (its owner can allow them with kin up --allow-root-shell)"
}

// installService registers `kin up` to start at login, per user.
func installService(e *env, install bool, dir, backups string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the kin binary: %w", err)
	}
	args := []string{"--home", e.home}
	if e.identity != "" {
		args = append(args, "--identity", e.identity)
	}
	if e.signal != "" {
		args = append(args, "--signal", e.signal)
	}
	args = append(args, "up")
	if dir != "" {
		args = append(args, "--dir", dir)
	}
	if backups != "" {
		args = append(args, "--backups", backups)
	}
	svc := agent.Service{Binary: self, Args: args, Out: e.stdout}
	if !install {
		return withHint(svc.Uninstall(), "remove it yourself, or from your startup scripts")
	}
	if e.signal == "" && !agent.TemporaryBinary(self) {
		return noSignal("")
	}
	err = svc.Install()
	switch {
	case errors.Is(err, agent.ErrTemporaryBinary):
		return withHint(err, "install kin first: go install . (it lands in $(go env GOPATH)/bin), or copy the binary to e.g. ~/.local/bin; then run that kin with up --install")
	case errors.Is(err, agent.ErrNoServiceManager):
		return withHint(err, "run kin up from your startup scripts")
	}
	return withHint(err, "run the command above yourself, or start kin up from your startup scripts")
}
