package e2e

// One identity, one presence (issue 13, item 4): several kin processes of
// one identity at once must not take each other's connections.

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// kin up runs; kin share of the same identity starts: the friend still
// gets the shell, files and port the agent gives him, and the share's
// ticket works too (before, the share took every connection, so the
// friend got "shell not allowed" and "files not allowed").
func TestAgentAndShareOfOneIdentity(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, blobSum := webServer(t, 1<<20)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "bob", strings.TrimSpace(bob.mustRun("id")),
		"--allow", "shell", "--allow", "files", "--allow", fmt.Sprintf("port=%d", webPort))
	bob.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	inbox := filepath.Join(t.TempDir(), "inbox")
	agent := dad.start("up", "--dir", inbox, "--allow-root-shell")
	agent.waitFor(`kin is up`)

	share := dad.start("share", fmt.Sprint(webPort))
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	share.waitFor(`served by your kin up`)

	if out, errs, code := bob.run("shell", "dad", "--", "echo", "shell-ok"); code != 0 || out != "shell-ok\n" {
		t.Fatalf("bob's shell while kin share runs: exit %d, %q %q", code, out, errs)
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "bob.bin")
	os.WriteFile(file, data, 0o644)
	if _, errs, code := bob.run("send", file, "dad"); code != 0 {
		t.Fatalf("bob's files while kin share runs: exit %d, %s", code, errs)
	}
	if got, err := os.ReadFile(filepath.Join(inbox, "bob.bin")); err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("bob's file at dad's: %v", err)
	}
	// bob's port, as a friend, and a stranger's, with the ticket.
	conn := bob.start("connect", fmt.Sprintf("dad:%d", webPort), "--listen", "127.0.0.1:0")
	if got := string(get(t, conn.waitFor(forwardingRE)[1], "/")); got != page {
		t.Fatalf("bob's port: %q", got)
	}
	stranger := newUser(t, "stranger")
	tconn := stranger.start("connect", ticket, "--listen", "127.0.0.1:0")
	if sum := sha256.Sum256(get(t, tconn.waitFor(forwardingRE)[1], "/blob")); sum != blobSum {
		t.Fatal("ticket holder's port: SHA-256 differs")
	}
	tconn.Interrupt()
	tconn.exit()

	// The ticket lives as long as kin share: after Ctrl-C it is refused,
	// while the agent goes on.
	share.Interrupt()
	if code := share.exit(); code != 0 {
		t.Errorf("share exit %d after Ctrl-C", code)
	}
	if _, errs, code := stranger.run("connect", ticket, "--listen", "127.0.0.1:0"); code == 0 || !strings.Contains(errs, "ticket was not accepted") {
		t.Fatalf("ticket after kin share stopped: exit %d, %s", code, errs)
	}
	if out, _, code := bob.run("shell", "dad", "--", "echo", "still"); code != 0 || out != "still\n" {
		t.Fatalf("agent after the share: exit %d, %q", code, out)
	}
	// kin receive would be a rival listener: it says where files land.
	if _, errs, code := dad.run("receive"); code == 0 || !strings.Contains(errs, "receives friends' files into "+inbox) {
		t.Fatalf("kin receive while kin up runs: exit %d, %s", code, errs)
	}
	// A second kin up of the same identity is refused, not a rival.
	if _, errs, code := dad.run("up", "--dir", inbox); code == 0 || !strings.Contains(errs, "already running") {
		t.Fatalf("second kin up: exit %d, %s", code, errs)
	}
}

// Twelve kin sends of one identity at once all land (before, each took
// the others' answers: 9 of 12 failed with "no answer from the peer"),
// first each registered on its own, then through the sender's agent.
func TestParallelSendsOfOneIdentity(t *testing.T) {
	a := startAgent(t)
	for _, via := range []string{"own registrations", "agent of the sender"} {
		if strings.HasPrefix(via, "agent") {
			kidAgent := a.kid.start("--verbose", "up", "--dir", filepath.Join(t.TempDir(), "kid-inbox"))
			kidAgent.waitFor(`kin is up`)
			defer func() { kidAgent.waitFor(`command dialed through the agent`) }()
		}
		dir := t.TempDir()
		sums := map[string][32]byte{}
		for i := 0; i < 12; i++ {
			name := fmt.Sprintf("%s-%02d.bin", strings.Fields(via)[0], i)
			b := make([]byte, 256<<10+i)
			rand.Read(b)
			os.WriteFile(filepath.Join(dir, name), b, 0o644)
			sums[name] = sha256.Sum256(b)
		}
		var wg sync.WaitGroup
		for name := range sums {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, errs, code := a.kid.run("send", "-q", filepath.Join(dir, name), "dad"); code != 0 {
					t.Errorf("send %s through %s: exit %d: %s", name, via, code, errs)
				}
			}()
		}
		wg.Wait()
		for name, want := range sums {
			got, err := os.ReadFile(filepath.Join(a.inbox, name))
			if err != nil || sha256.Sum256(got) != want {
				t.Errorf("%s at dad's (through %s): %v", name, via, err)
			}
		}
	}
}

// The control socket is the owner's only: its directory is 0700 and the
// socket 0600 (the agent also checks the caller's user ID: agent tests).
func TestAgentControlSocketModes(t *testing.T) {
	a := startAgent(t)
	sock := filepath.Join(a.dad.Home, "agent", "control.sock")
	for path, want := range map[string]os.FileMode{filepath.Dir(sock): 0o700 | os.ModeDir, sock: 0o600 | os.ModeSocket} {
		st, err := os.Stat(path)
		if err != nil || st.Mode() != want {
			t.Fatalf("%s: %v (%v), want %v", path, st.Mode(), err, want)
		}
	}
}

// Without an agent, two kin shares of one identity: each ticket names the
// process that issued it, so each reaches its own share (before, the
// newest took both and refused the older one's ticket).
func TestTwoSharesOfOneIdentity(t *testing.T) {
	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob")
	var tickets []string
	var sums [][32]byte
	for i := 0; i < 2; i++ {
		port, _, sum := webServer(t, 64<<10)
		share := alice.start("share", fmt.Sprint(port))
		tickets = append(tickets, share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1])
		sums = append(sums, sum)
	}
	for i, ticket := range tickets {
		conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
		if sha256.Sum256(get(t, conn.waitFor(forwardingRE)[1], "/blob")) != sums[i] {
			t.Fatalf("ticket %d reached the wrong share", i)
		}
		conn.Interrupt()
		conn.exit()
	}
}
