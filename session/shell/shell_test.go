//go:build !windows

package shell

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"kin/internal/testconn"
)

// pair runs an SSH server whose session channels go to Serve, and returns
// a client connected to it over a pipe.
func pair(t *testing.T) (*ssh.Client, func()) {
	t.Helper()
	return pairWith(t, Config{Shell: "/bin/sh"})
}

// pairWith is pair with the server's Config.
func pairWith(t *testing.T, cfg Config) (*ssh.Client, func()) {
	t.Helper()
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	hs, _ := ssh.NewSignerFromKey(hk)
	scfg := &ssh.ServerConfig{NoClientAuth: true}
	scfg.AddHostKey(hs)
	a, b := testconn.TCPPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, chans, reqs, err := ssh.NewServerConn(b, scfg)
		if err != nil {
			return
		}
		defer conn.Close()
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				Serve(ctx, ch, creqs, cfg)
			}()
		}
	}()
	c, chans, reqs, err := ssh.NewClientConn(a, "kin", &ssh.ClientConfig{HostKeyCallback: ssh.InsecureIgnoreHostKey(), User: "kin"})
	if err != nil {
		t.Fatal(err)
	}
	client := ssh.NewClient(c, chans, reqs)
	return client, func() {
		client.Close()
		cancel()
		wg.Wait()
	}
}

func TestExitCodeStdoutStderr(t *testing.T) {
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err := s.Run("echo out; echo err >&2; exit 7")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("exit: %v", err)
	}
	if out.String() != "out\n" || errb.String() != "err\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
	s, _ = c.NewSession()
	err = s.Run("no-such-command-kin-test")
	if !errors.As(err, &ee) || ee.ExitStatus() != 127 {
		t.Fatalf("missing command: %v", err)
	}
}

func TestStdinWithoutTerminal(t *testing.T) {
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	s.Stdin = strings.NewReader("hello\nworld\n")
	out, err := s.Output("wc -l")
	if err != nil || strings.TrimSpace(string(out)) != "2" {
		t.Fatalf("%q %v", out, err)
	}
}

func TestTerminalSizeAndResize(t *testing.T) {
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := s.StdinPipe()
	var out syncBuffer
	s.Stdout = &out
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "stty size; echo TERM=$TERM")
	waitFor(t, &out, "24 80")
	waitFor(t, &out, "TERM=xterm")
	if err := s.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	fmt.Fprintln(stdin, "stty size; exit 3")
	waitFor(t, &out, "50 132")
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Fatalf("exit: %v", err)
	}
}

func TestNoOrphansWhenThePeerGoesAway(t *testing.T) {
	c, done := pair(t)
	s, _ := c.NewSession()
	var out syncBuffer
	s.Stdout = &out
	if err := s.Start("sleep 60 & echo $!; wait"); err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(waitFor(t, &out, "\n")))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("child pid %d not running", pid)
	}
	done() // the connection drops
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d still running after the peer went away", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSignalReachesCommand(t *testing.T) {
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	var out syncBuffer
	s.Stdout = &out
	s.Start("trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done")
	waitFor(t, &out, "ready")
	s.Signal(ssh.SIGTERM)
	waitFor(t, &out, "got-term")
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 9 {
		t.Fatalf("exit: %v", err)
	}
}

func TestSFTPSubsystem(t *testing.T) {
	c, done := pair(t)
	defer done()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	path := filepath.Join(t.TempDir(), "x.txt")
	f, err := sc.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("via sftp"))
	f.Close()
	if b, _ := os.ReadFile(path); string(b) != "via sftp" {
		t.Fatalf("file has %q", b)
	}
	// Relative paths start at home, as with OpenSSH (restic -r sftp:dad:repo).
	me, err := user.Current()
	if err != nil {
		return
	}
	if wd, err := sc.Getwd(); err != nil || wd != me.HomeDir {
		t.Errorf("sftp starts in %q (%v), want %s", wd, err, me.HomeDir)
	}
}

func TestUnknownSubsystemRefused(t *testing.T) {
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	if err := s.RequestSubsystem("nope"); err == nil {
		t.Fatal("unknown subsystem accepted")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until out contains want and returns the output before it.
func waitFor(t *testing.T, out *syncBuffer, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if i := strings.Index(out.String(), want); i >= 0 {
			return out.String()[:i+len(want)]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output %q", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A command gets USER, LOGNAME, HOME and SHELL like sshd gives them, even
// when the agent was started without them, and starts in the home directory.
func TestLoginEnvironment(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skip(err)
	}
	t.Setenv("USER", "")
	t.Setenv("LOGNAME", "someone-else")
	t.Setenv("HOME", "")
	os.Unsetenv("HOME") // t.Setenv restores it
	c, done := pair(t)
	defer done()
	s, _ := c.NewSession()
	out, err := s.Output(`echo "$USER $LOGNAME $HOME $SHELL $(pwd)"`)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s %s %s /bin/sh %s\n", me.Username, me.Username, me.HomeDir, me.HomeDir)
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}
