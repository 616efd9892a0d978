//go:build !windows

package shell

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
)

const (
	defaultShell = "/bin/sh"
	shellFlag    = "-c"
)

type terminal interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Resize(cols, rows uint32)
	CloseAfterDrain(out <-chan struct{})
}

type unixPTY struct {
	f *os.File
	// mu orders Resize against the close: Resize uses the descriptor's
	// number, which after the close may belong to another file.
	mu     sync.Mutex
	closed bool
}

// startTerminal starts cmd on a new pseudo-terminal (a new session, so
// killGroup reaches its children too).
func startTerminal(cmd *exec.Cmd, cols, rows uint32) (terminal, func() error, *os.Process, error) {
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)})
	if err != nil {
		return nil, nil, nil, err
	}
	return &unixPTY{f: f}, cmd.Wait, cmd.Process, nil
}

func (t *unixPTY) Read(b []byte) (int, error)  { return t.f.Read(b) }
func (t *unixPTY) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t *unixPTY) Resize(cols, rows uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		pty.Setsize(t.f, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)})
	}
}

func (t *unixPTY) CloseAfterDrain(out <-chan struct{}) {
	select {
	case <-out:
	case <-time.After(time.Second):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.f.Close()
}

// setProcessGroup puts a command without a terminal in its own process
// group, so that killGroup reaches everything it started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(p *os.Process) {
	syscall.Kill(-p.Pid, syscall.SIGHUP)
	syscall.Kill(-p.Pid, syscall.SIGTERM)
	time.AfterFunc(2*time.Second, func() { syscall.Kill(-p.Pid, syscall.SIGKILL) })
}

var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP,
	"QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "ALRM": syscall.SIGALRM,
	"PIPE": syscall.SIGPIPE, "ABRT": syscall.SIGABRT, "SEGV": syscall.SIGSEGV, "FPE": syscall.SIGFPE, "ILL": syscall.SIGILL,
}

func (s *session) signal(name string) {
	sig, ok := signals[strings.TrimPrefix(name, "SIG")]
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if ok && p != nil {
		syscall.Kill(-p.Pid, sig)
	}
}

type exitSignalMsg struct {
	Signal     string
	CoreDumped bool
	Error      string
	Lang       string
}

func (s *session) exitSignal(sig os.Signal) {
	name := "KILL"
	for n, v := range signals {
		if v == sig {
			name = n
		}
	}
	s.log.Info("command ended", "signal", name)
	s.ch.SendRequest("exit-signal", false, ssh.Marshal(exitSignalMsg{Signal: name}))
	s.ch.CloseWrite()
}
