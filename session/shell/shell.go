// Package shell serves SSH "session" channels the way sshd does: a login
// shell or one command, with or without a terminal, environment variables,
// window changes, signals, the exit status, and the sftp subsystem, so that
// kin shell and OpenSSH's ssh, scp and sftp all work against a kin agent.
// Commands run as the user running the agent. Run is the other end: what
// kin shell does with a session channel to a friend's agent.
package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Config says how to run what a peer asks for.
type Config struct {
	// Shell is the login shell; default $SHELL, then /bin/sh (cmd.exe on Windows).
	Shell  string
	Logger *slog.Logger // says who, for the agent's log
	// SFTPRoot, if set, limits the session to the sftp subsystem inside
	// this directory (created if missing): no commands, no shell, nothing
	// outside it. For friends who may send files but not run commands.
	SFTPRoot string
}

func (c Config) shell() string {
	if c.Shell != "" {
		return c.Shell
	}
	if s := os.Getenv("SHELL"); s != "" {
		return s
	}
	return defaultShell
}

func (c Config) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Standard SSH request payloads (RFC 4254, section 6).
type ptyReq struct {
	Term          string
	Cols, Rows    uint32
	Width, Height uint32
	Modes         string
}

type winch struct {
	Cols, Rows    uint32
	Width, Height uint32
}

type envReq struct{ Name, Value string }
type execReq struct{ Command string }
type subsystemReq struct{ Name string }
type signalReq struct{ Signal string }
type exitStatus struct{ Status uint32 }

// allowedEnv are the variables a client may set, as OpenSSH's default AcceptEnv.
func allowedEnv(name string) bool {
	return name == "LANG" || strings.HasPrefix(name, "LC_") || name == "TZ" || name == "COLORTERM"
}

// Serve runs one session channel until what it started ends, the peer
// closes the channel, or ctx is done; then it kills what is still running.
func Serve(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, cfg Config) {
	s := &session{ch: ch, cfg: cfg, log: cfg.log()}
	defer ch.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			s.kill()
			return
		case <-done:
			return
		case req, ok := <-reqs:
			if !ok {
				s.kill()
				return
			}
			ok, started := s.handle(req)
			if req.WantReply {
				req.Reply(ok, nil)
			}
			if started != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(done)
					started()
				}()
			}
		}
	}
}

type session struct {
	ch  ssh.Channel
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	env     []string
	pty     *ptyReq
	term    terminal // set while a command runs on a terminal
	proc    *os.Process
	started bool
}

// handle answers one request; if it starts something, started runs it to
// the end (sending the exit status).
func (s *session) handle(req *ssh.Request) (ok bool, started func()) {
	if s.cfg.SFTPRoot != "" && req.Type != "subsystem" && req.Type != "shell" && req.Type != "exec" {
		return false, nil // no terminals, no environment: sftp only
	}
	switch req.Type {
	case "pty-req":
		var p ptyReq
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		s.mu.Lock()
		s.pty = &p
		s.mu.Unlock()
		return true, nil
	case "env":
		var e envReq
		if ssh.Unmarshal(req.Payload, &e) != nil || !allowedEnv(e.Name) {
			return false, nil
		}
		s.mu.Lock()
		s.env = append(s.env, e.Name+"="+e.Value)
		s.mu.Unlock()
		return true, nil
	case "window-change":
		var w winch
		if ssh.Unmarshal(req.Payload, &w) != nil {
			return false, nil
		}
		s.mu.Lock()
		if s.pty != nil {
			s.pty.Cols, s.pty.Rows = w.Cols, w.Rows
		}
		t := s.term
		s.mu.Unlock()
		if t != nil {
			t.Resize(w.Cols, w.Rows)
		}
		return true, nil
	case "signal":
		var sg signalReq
		if ssh.Unmarshal(req.Payload, &sg) != nil {
			return false, nil
		}
		s.signal(sg.Signal)
		return true, nil
	case "shell", "exec", "subsystem":
		s.mu.Lock()
		already := s.started
		s.started = true
		s.mu.Unlock()
		if already {
			return false, nil
		}
		return s.start(req)
	}
	return false, nil
}

func (s *session) start(req *ssh.Request) (bool, func()) {
	if s.cfg.SFTPRoot != "" && req.Type != "subsystem" {
		// Say why, on stderr with an exit status, rather than a bare
		// refusal the client may report as "exec request failed".
		s.log.Warn("refused shell", "why", "files permission only: sftp in their folder")
		return true, func() {
			fmt.Fprintln(s.ch.Stderr(), "kin: you may not open a shell here: you are allowed files only (sftp in a folder of your own)")
			s.exit(1)
		}
	}
	switch req.Type {
	case "subsystem":
		var sub subsystemReq
		if ssh.Unmarshal(req.Payload, &sub) != nil || sub.Name != "sftp" {
			return false, nil
		}
		// sftp closes what it is given; the channel must stay open until
		// the exit status is sent.
		rwc := struct {
			io.Reader
			io.Writer
			io.Closer
		}{s.ch, s.ch, io.NopCloser(nil)}
		if s.cfg.SFTPRoot != "" {
			h, root, err := sftpHandlers(s.cfg.SFTPRoot)
			if err != nil {
				s.log.Warn("sftp refused", "err", err)
				return false, nil
			}
			s.log.Info("sftp session", "folder", s.cfg.SFTPRoot)
			return true, func() {
				defer root.Close()
				srv := sftp.NewRequestServer(rwc, h)
				err := srv.Serve()
				srv.Close()
				s.exitSFTP(err)
			}
		}
		s.log.Info("sftp session")
		return true, func() {
			// Relative paths start at home, as with OpenSSH's sftp-server.
			_, home := loginEnv(nil, s.cfg.shell())
			var opts []sftp.ServerOption
			if home != "" {
				opts = append(opts, sftp.WithServerWorkingDirectory(home))
			}
			srv, err := sftp.NewServer(rwc, opts...)
			if err != nil {
				s.exit(1)
				return
			}
			err = srv.Serve()
			srv.Close()
			s.exitSFTP(err)
		}
	case "exec":
		var e execReq
		if ssh.Unmarshal(req.Payload, &e) != nil {
			return false, nil
		}
		s.log.Info("run command", "command", e.Command)
		return true, func() { s.run(s.command(e.Command)) }
	default:
		s.log.Info("open shell")
		return true, func() { s.run(s.command("")) }
	}
}

func (s *session) exitSFTP(err error) {
	if err != nil && !errors.Is(err, io.EOF) {
		s.exit(1)
		return
	}
	s.exit(0)
}

// command builds the process: the login shell, or the shell running line.
func (s *session) command(line string) *exec.Cmd {
	sh := s.cfg.shell()
	var cmd *exec.Cmd
	if line == "" {
		cmd = exec.Command(sh)
		cmd.Args[0] = loginArg0(sh)
	} else {
		cmd = exec.Command(sh, shellFlag, line)
	}
	env, home := loginEnv(os.Environ(), sh)
	cmd.Dir = home
	s.mu.Lock()
	cmd.Env = append(env, s.env...)
	if s.pty != nil && s.pty.Term != "" {
		cmd.Env = append(cmd.Env, "TERM="+s.pty.Term)
	}
	s.mu.Unlock()
	return cmd
}

// loginEnv gives a command what sshd gives a login: USER, LOGNAME, HOME
// and SHELL for the account the agent runs as (a service manager may have
// started the agent without them), in place of inherited ones. It also
// returns the home directory ("" if unknown: then the agent's directory).
func loginEnv(env []string, sh string) ([]string, string) {
	home, _ := os.UserHomeDir()
	if runtime.GOOS == "windows" {
		return env, home // USERNAME and USERPROFILE are already there
	}
	set := map[string]string{"SHELL": sh}
	if u, err := user.Current(); err == nil {
		set["USER"], set["LOGNAME"] = u.Username, u.Username
		if u.HomeDir != "" {
			home = u.HomeDir
		}
	}
	if home != "" {
		set["HOME"] = home
	}
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := set[name]; !ok {
			out = append(out, kv)
		}
	}
	for _, name := range []string{"USER", "LOGNAME", "HOME", "SHELL"} {
		if v, ok := set[name]; ok {
			out = append(out, name+"="+v)
		}
	}
	return out, home
}

// loginArg0 makes a Unix shell a login shell the traditional way ("-bash").
func loginArg0(sh string) string {
	if defaultShell == "/bin/sh" {
		return "-" + filepath.Base(sh)
	}
	return sh
}

func (s *session) run(cmd *exec.Cmd) {
	s.mu.Lock()
	p := s.pty
	s.mu.Unlock()
	var err error
	if p != nil {
		err = s.runTerminal(cmd, p)
	} else {
		err = s.runPlain(cmd)
	}
	s.exitWith(err)
}

func (s *session) runPlain(cmd *exec.Cmd) error {
	cmd.Stdout = s.ch
	cmd.Stderr = s.ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = cmd.Process
	s.mu.Unlock()
	go func() {
		io.Copy(stdin, s.ch)
		stdin.Close()
	}()
	return cmd.Wait()
}

func (s *session) runTerminal(cmd *exec.Cmd, p *ptyReq) error {
	t, wait, proc, err := startTerminal(cmd, p.Cols, p.Rows)
	if err != nil {
		return fmt.Errorf("start terminal: %w", err)
	}
	s.mu.Lock()
	s.term = t
	s.proc = proc
	s.mu.Unlock()
	go io.Copy(t, s.ch)
	out := make(chan struct{})
	go func() {
		io.Copy(s.ch, t)
		close(out)
	}()
	err = wait()
	// Let the last output drain, then close the terminal.
	t.CloseAfterDrain(out)
	return err
}

func (s *session) exitWith(err error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		s.exit(0)
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			s.exitSignal(ws.Signal())
			return
		}
		s.exit(ee.ExitCode())
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(s.ch.Stderr(), "kin: %v\n", err)
		s.exit(127)
	default:
		fmt.Fprintf(s.ch.Stderr(), "kin: %v\n", err)
		s.exit(1)
	}
}

func (s *session) exit(code int) {
	s.log.Info("command ended", "exit", code)
	s.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{uint32(code)}))
	s.ch.CloseWrite()
}

// kill ends the process group when the peer goes away, so nothing is left
// running on the agent's machine.
func (s *session) kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		killGroup(p)
	}
}
