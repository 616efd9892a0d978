package cmd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"kin/agent"
	"kin/keys"
	"kin/session"
	"kin/session/files"
	"kin/session/shell"
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
	t, ctx := newTasks(c.Context)
	defer t.stop()
	// The control socket first: a second kin up of this home stops here,
	// before it registers and takes connections meant for the first.
	ag := &upAgent{e: e, inbox: dir}
	ctl, err := agent.Listen(e.home, ag, e.log.With("part", "agent"))
	if errors.Is(err, agent.ErrAlreadyRunning) {
		return withHint(errors.New("kin up is already running for this identity"), "kin share, send, receive, connect and shell use it; stop it first to run another")
	}
	if err != nil {
		// Still serve friends; commands then register on their own.
		e.log.Warn("no control socket: kin share and kin receive of this identity will compete with this agent", "err", err)
	}
	p, err := startPeer(ctx, e, id, e.signal)
	if err != nil {
		if ctl != nil {
			ctl.Close()
		}
		return err
	}
	defer p.close()
	ag.p = p
	if ctl != nil {
		defer ctl.Close()
		t.Go(func() error {
			if err := ctl.Serve(ctx); err != nil {
				e.log.Error("control socket stopped; kin commands will not use this agent", "err", err)
			}
			return nil
		})
	}
	shells, shellOff := rootShells(e, c.Bool("allow-root-shell"))
	invites := inviteHook(e, e.log, func(iv keys.Invite, fr keys.Friend) {
		e.log.Info(addedSentence(fr)+" (invite "+iv.ID+")", "who", fr.Name)
	})
	srv, err := session.NewServer(session.ServerConfig{
		Identity: id,
		Friends:  friendsFile.Get,
		Tickets:  ag.shares.Tickets, // kin share through this agent
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
	})
	if err != nil {
		return err
	}
	e.log.Info("kin is up", "id", id.ID(), "signal", e.signal, "friends", len(friends.List()), "inbox", dir, "backups", backupsDir(c))
	t.Go(func() error { return p.serve(ctx, srv) })
	err = t.Wait()
	e.log.Info("kin is down")
	return err
}

// rootShellOff is what a friend allowed a shell is told when kin up runs
// as root without --allow-root-shell.
const rootShellOff = "this kin runs as root and gives no root shells"

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
	return nil, rootShellOff + " (its owner can allow them with kin up --allow-root-shell)"
}

// backupsDir holds the sftp folders of friends who may send files but not
// run commands: --backups, or ~/kin-backups. Folders are made on first use.
func backupsDir(c *cli.Context) string {
	if dir := c.String("backups"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "kin-backups"
	}
	return filepath.Join(home, "kin-backups")
}

// installService registers `kin up` to start at login, per user.
func installService(e *env, install bool, dir, backups string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the kin binary: %w", err)
	}
	if install && temporaryBinary(self) {
		return withHint(fmt.Errorf("this kin runs from a temporary directory (%s), which goes away; a service must start a kin that stays", filepath.Dir(self)),
			"install kin first: go install . (it lands in $(go env GOPATH)/bin), or copy the binary to e.g. ~/.local/bin; then run that kin with up --install")
	}
	args := []string{"--home", e.home}
	if e.identity != "" {
		args = append(args, "--identity", e.identity)
	}
	if e.signal != "" {
		args = append(args, "--signal", e.signal)
	} else if install {
		return noSignal("")
	}
	args = append(args, "up")
	if dir != "" {
		args = append(args, "--dir", dir)
	}
	if backups != "" {
		args = append(args, "--backups", backups)
	}
	home, _ := os.UserHomeDir()
	switch runtime.GOOS {
	case "linux":
		unit := filepath.Join(home, ".config", "systemd", "user", "kin.service")
		if !install {
			runCmd(e, "systemctl", "--user", "disable", "--now", "kin.service")
			os.Remove(unit)
			fmt.Fprintf(e.stdout, "removed %s\n", unit)
			return nil
		}
		text := fmt.Sprintf("[Unit]\nDescription=kin: stay reachable for friends\nAfter=network-online.target\n\n[Service]\nExecStart=%s %s\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=default.target\n",
			quoteArgs(self), quoteArgs(args...))
		if err := writeFile(unit, text); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s\n", unit)
		return runCmd(e, "systemctl", "--user", "enable", "--now", "kin.service")
	case "darwin":
		plist := filepath.Join(home, "Library", "LaunchAgents", "org.kin.up.plist")
		if !install {
			runCmd(e, "launchctl", "unload", plist)
			os.Remove(plist)
			fmt.Fprintf(e.stdout, "removed %s\n", plist)
			return nil
		}
		var b strings.Builder
		for _, a := range append([]string{self}, args...) {
			fmt.Fprintf(&b, "    <string>%s</string>\n", xmlEscape(a))
		}
		text := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>Label</key><string>org.kin.up</string>
  <key>ProgramArguments</key><array>
%s  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><true/>
</dict></plist>
`, b.String())
		if err := writeFile(plist, text); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s\n", plist)
		return runCmd(e, "launchctl", "load", "-w", plist)
	case "windows":
		if !install {
			return runCmd(e, "schtasks", "/Delete", "/F", "/TN", "kin")
		}
		return runCmd(e, "schtasks", "/Create", "/F", "/SC", "ONLOGON", "/TN", "kin", "/TR", quoteArgs(append([]string{self}, args...)...))
	}
	return fmt.Errorf("kin up --install does not know how to make a service on %s; run kin up from your startup scripts", runtime.GOOS)
}

// temporaryBinary reports whether the binary at path lives somewhere
// that disappears: the system's temporary directory, $GOTMPDIR, the Go
// build cache ($GOCACHE), or a go-build directory (go run, go test).
func temporaryBinary(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	var temps []string
	for _, d := range []string{os.TempDir(), os.Getenv("GOTMPDIR"), os.Getenv("GOCACHE")} {
		if d == "" {
			continue
		}
		temps = append(temps, filepath.Clean(d))
		if real, err := filepath.EvalSymlinks(d); err == nil {
			temps = append(temps, real)
		}
	}
	for _, p := range paths {
		for _, d := range temps {
			if rel, err := filepath.Rel(d, p); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
				return true
			}
		}
		for _, part := range strings.Split(filepath.ToSlash(p), "/") {
			if strings.HasPrefix(part, "go-build") {
				return true
			}
		}
	}
	return false
}

func runCmd(e *env, name string, args ...string) error {
	fmt.Fprintf(e.stdout, "running: %s %s\n", name, strings.Join(args, " "))
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return withHint(fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out))), "run the command above yourself, or start kin up from your startup scripts")
	}
	return nil
}

func writeFile(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func quoteArgs(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"'\\") {
			a = `"` + strings.ReplaceAll(strings.ReplaceAll(a, `\`, `\\`), `"`, `\"`) + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
