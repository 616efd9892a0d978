package main

// End-to-end tests of what people read, and of kin connect and kin send
// when the other side goes away.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// kin connect to a friend's kin up keeps its local port through a restart
// of the agent: it says it lost the connection, reconnects by itself, says
// so, and the same local address works again.
func TestConnectReconnectsAfterAgentRestart(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, _ := webServer(t, 0)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", fmt.Sprintf("port=%d", webPort))
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	agent := dad.start("up")
	agent.waitFor(`kin is up`)

	conn := kid.start("connect", fmt.Sprintf("dad:%d", webPort), "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("before the restart: page = %q", got)
	}

	agent.interrupt()
	if code := agent.exit(); code != 0 {
		t.Fatalf("kin up exit %d after Ctrl-C", code)
	}
	conn.waitFor(`^lost the connection to dad \(.*\); reconnecting until you press Ctrl-C, ` + local + ` stays open$`)
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^connected to dad again \(.*\); forwarding ` + local + ` -> dad:` + fmt.Sprint(webPort) + `$`)
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("after the restart: page = %q", got)
	}
	// The agent logged the forwards (at info: no --verbose).
	agent.waitFor(`msg="port forward opened" .*who="kid .*port=` + fmt.Sprint(webPort))

	// A refusal ends it: trying again cannot change that.
	agent.interrupt()
	agent.exit()
	conn.waitFor(`^lost the connection to dad`)
	dad.mustRun("friends", "rm", "kid")
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^kin: refused: the peer does not know your key`) // after the backoff: up to 30 s
	if code := conn.exit(); code != 1 {
		t.Errorf("after dad removed kid: exit %d:\n%s", code, conn.output())
	}
}

// A sender notices a receiver killed mid-send (kill -9: no goodbye) within
// a few seconds (measured: 4.2 s on either lane, was 10 s on QUIC and 14 s
// on the data channel), and says so in a sentence.
func TestSenderNoticesDeadReceiver(t *testing.T) {
	for _, lane := range []string{"auto", "datachannel"} {
		t.Run(lane, func(t *testing.T) { senderNoticesDeadReceiver(t, "KIN_LANE="+lane) })
	}
}

func senderNoticesDeadReceiver(t *testing.T, lane string) {
	url, _ := startSignal(t)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url, lane)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url, lane)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", "files")
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	inbox := filepath.Join(t.TempDir(), "inbox")
	recv := dad.start("receive", "--dir", inbox)
	recv.waitFor(`receiving into`)

	// An endless stream: the send is still going when the receiver dies.
	pr, pw := io.Pipe()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				pw.Close()
				return
			default:
			}
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	cmd := kid.command(context.Background(), "send", "-", "dad", "--name", "stream.bin")
	cmd.Stdin = pr
	var out lockedLines
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	// Mid-send: bytes have landed in the receiver's partial file.
	for !partialHasBytes(filepath.Join(inbox, ".kin-partial")) {
		select {
		case err := <-exited:
			t.Fatalf("send ended before the receiver died: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	recv.cmd.Process.Kill()
	killed := time.Now()
	err := <-exited
	took := time.Since(killed)
	t.Logf("the sender exited %v after the receiver was killed: %v\n%s", took.Round(10*time.Millisecond), err, out.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("send exit: %v", err)
	}
	for _, want := range []string{"kin: send to dad: the connection was lost: ", "the peer stopped answering", "hint: dad's kin stopped, or the network between you did"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sender's message lacks %q:\n%s", want, out.String())
		}
	}
}

func partialHasBytes(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".part") && fi.Size() > 0 {
			return true
		}
	}
	return false
}

// lockedLines collects a process's output.
type lockedLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
