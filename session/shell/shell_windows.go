//go:build windows

package shell

import (
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/charmbracelet/x/conpty"
)

const (
	defaultShell = "cmd.exe"
	shellFlag    = "/c"
)

type terminal interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Resize(cols, rows uint32)
	CloseAfterDrain(out <-chan struct{})
}

type winPTY struct{ c *conpty.ConPty }

func (t *winPTY) Read(b []byte) (int, error)  { return t.c.Read(b) }
func (t *winPTY) Write(b []byte) (int, error) { return t.c.Write(b) }
func (t *winPTY) Resize(cols, rows uint32)    { t.c.Resize(int(cols), int(rows)) }
func (t *winPTY) CloseAfterDrain(out <-chan struct{}) {
	select {
	case <-out:
	case <-time.After(time.Second):
	}
	t.c.Close()
}

// startTerminal runs cmd on a Windows pseudo console (ConPTY).
func startTerminal(cmd *exec.Cmd, cols, rows uint32) (terminal, func() error, *os.Process, error) {
	c, err := conpty.New(int(cols), int(rows), 0)
	if err != nil {
		return nil, nil, nil, err
	}
	path, err := exec.LookPath(cmd.Path)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	pid, _, err := c.Spawn(path, cmd.Args, &syscall.ProcAttr{Dir: cmd.Dir, Env: cmd.Env})
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	wait := func() error {
		st, err := proc.Wait()
		if err != nil {
			return err
		}
		if !st.Success() {
			return &exec.ExitError{ProcessState: st}
		}
		return nil
	}
	return &winPTY{c}, wait, proc, nil
}

func setProcessGroup(cmd *exec.Cmd) {}

func killGroup(p *os.Process) { p.Kill() }

func (s *session) signal(name string) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil && (name == "KILL" || name == "TERM" || name == "INT") {
		p.Kill()
	}
}

func (s *session) exitSignal(sig os.Signal) { s.exit(1) }
