package e2e

// Sharing a port: kin share and kin connect, with a ticket and between
// friends, the embedded signaling server, and the command line's errors.

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const forwardingRE = `forwarding (127\.0\.0\.1:\d+) -> (\S+):(\d+)`

func TestShareConnectWithTicket(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, blobSum := webServer(t, 8<<20)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob") // a ticket needs no configuration

	out := alice.mustRun("id")
	if !strings.HasPrefix(out, "ssh-ed25519 AAAA") {
		t.Fatalf("kin id printed %q", out)
	}
	share := alice.start("share", fmt.Sprint(webPort))
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]

	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
	m := conn.waitFor(forwardingRE)
	if m[2] != "alice" || m[3] != fmt.Sprint(webPort) {
		t.Errorf("forwarding line names %s:%s", m[2], m[3])
	}
	if got := string(get(t, m[1], "/")); got != page {
		t.Fatalf("page through kin = %q", got)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // several TCP connections through one peer connection
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sum := sha256.Sum256(get(t, m[1], "/blob")); sum != blobSum {
				t.Errorf("8 MiB blob through kin: SHA-256 differs")
			}
		}()
	}
	wg.Wait()

	// Ctrl-C on either side ends cleanly.
	conn.Interrupt()
	if code := conn.exit(); code != 0 {
		t.Errorf("connect exit %d after Ctrl-C", code)
	}
	share.Interrupt()
	if code := share.exit(); code != 0 {
		t.Errorf("share exit %d after Ctrl-C", code)
	}

	// The sharer is gone: the ticket's peer is offline.
	_, errs, code := bob.run("connect", ticket, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "alice is not online") {
		t.Fatalf("offline peer: exit %d, stderr %q", code, errs)
	}
}

func TestEmbeddedSignalingServer(t *testing.T) {
	webPort, page, _ := webServer(t, 0)
	alice := newUser(t, "alice")
	bob := newUser(t, "bob")
	share := alice.start("share", fmt.Sprint(webPort)) // no KIN_SIGNAL: runs its own
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
	m := conn.waitFor(forwardingRE)
	if got := string(get(t, m[1], "/")); got != page {
		t.Fatalf("page = %q", got)
	}
}

func TestFriendsWithoutTickets(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, _ := webServer(t, 0)
	otherPort, _, _ := webServer(t, 0)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url)
	eve := newUser(t, "eve", "KIN_SIGNAL="+url)
	aliceKey := strings.TrimSpace(alice.mustRun("id"))
	bobKey := strings.TrimSpace(bob.mustRun("id"))

	alice.mustRun("friends", "add", "bob", bobKey, "--allow", fmt.Sprintf("port=%d", webPort))
	bob.mustRun("friends", "add", "alice", aliceKey)
	eve.mustRun("friends", "add", "alice", aliceKey)
	if ls := alice.mustRun("friends", "ls"); !strings.Contains(ls, "bob") || !strings.Contains(ls, fmt.Sprintf("port=%d", webPort)) {
		t.Fatalf("friends ls: %q", ls)
	}

	share := alice.start("share", fmt.Sprint(webPort))
	share.waitFor(`^kin connect kin1`)
	conn := bob.start("connect", fmt.Sprintf("alice:%d", webPort), "--listen", "127.0.0.1:0")
	m := conn.waitFor(forwardingRE)
	if got := string(get(t, m[1], "/")); got != page {
		t.Fatalf("page = %q", got)
	}

	// A port alice did not allow bob (and does not share).
	_, errs, code := bob.run("connect", fmt.Sprintf("alice:%d", otherPort), "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "not allow") {
		t.Errorf("port not allowed: exit %d, stderr %q", code, errs)
	}
	// eve knows alice's key but alice does not know eve.
	_, errs, code = eve.run("connect", fmt.Sprintf("alice:%d", webPort), "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "does not know your key") {
		t.Errorf("non-friend: exit %d, stderr %q", code, errs)
	}
	// The sharer logged both refusals and keeps serving bob.
	share.waitFor(`refused`)
	if got := string(get(t, m[1], "/")); got != page {
		t.Fatalf("after refusals, page = %q", got)
	}
	// An unknown friend name.
	_, errs, code = bob.run("connect", "carol:80")
	if code == 0 || !strings.Contains(errs, `no friend named "carol"`) {
		t.Errorf("unknown friend: exit %d, stderr %q", code, errs)
	}
}

func TestLocalServiceRefusesKeepsPeerConnection(t *testing.T) {
	url, _ := startSignal(t)
	// A port with nothing listening yet.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob")
	share := alice.start("share", fmt.Sprint(port))
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]

	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("read from refused service: n=%d err=%v", n, err)
	}
	c.Close()

	// Now the service comes up; the same peer connection carries it.
	ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up now") })}
	go srv.Serve(ln)
	defer srv.Close()
	if got := string(get(t, local, "/")); got != "up now" {
		t.Fatalf("page = %q", got)
	}
	select {
	case <-conn.Done():
		t.Fatal("kin connect exited after one refused connection")
	default:
	}
}

func TestBadInputIsAClearError(t *testing.T) {
	u := newUser(t, "u")
	key := strings.TrimSpace(u.mustRun("id"))
	tk := "kin1" + strings.Repeat("abcd", 40)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"connect", tk}, "checksum"},
		{[]string{"connect", "kin1abc"}, "too short"},
		{[]string{"connect", "nocolon"}, "neither a ticket nor FRIEND:PORT"},
		{[]string{"connect", "bob:99999"}, "invalid port"},
		{[]string{"share", "http"}, "invalid port"},
		{[]string{"share"}, "share needs one port"},
		{[]string{"friends", "add", "bob", "not-a-key"}, "not a public key"},
		{[]string{"friends", "add", "b:b", key}, "invalid friend name"},
		{[]string{"friends", "add", "bob", key, "--allow", "root"}, "unknown permission"},
		{[]string{"friends", "rm", "nobody"}, `no friend named "nobody"`},
		{[]string{"--identity", "/nonexistent/key", "id"}, "read identity"},
	}
	for _, c := range cases {
		out, errs, code := u.run(c.args...)
		if code == 0 || !strings.Contains(errs, c.want) || !strings.HasPrefix(errs, "kin: ") {
			t.Errorf("kin %v: exit %d, stdout %q, stderr %q; want error containing %q", c.args, code, out, errs, c.want)
		}
		if strings.Contains(errs, "goroutine ") || strings.Contains(errs, "panic") {
			t.Errorf("kin %v panicked: %s", c.args, errs)
		}
	}
	// A truncated ticket (copy-paste cut short).
	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	share := alice.start("share", "1")
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	_, errs, code := u.run("connect", ticket[:len(ticket)-3])
	if code == 0 || !strings.Contains(errs, "ticket") {
		t.Errorf("truncated ticket: exit %d, stderr %q", code, errs)
	}
}

func TestDemo(t *testing.T) {
	u := newUser(t, "demo")
	out, errs, code := u.run("demo")
	if code != 0 {
		t.Fatalf("kin demo: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"ICE connected", "SSH handshake", "first byte", "ok: bob fetched alice's page"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	u := newUser(t, "u")
	if out := u.mustRun("--version"); !strings.Contains(out, "kin version") {
		t.Errorf("--version: %q", out)
	}
	if out := u.mustRun("share", "--help"); !strings.Contains(out, "ticket") {
		t.Errorf("share --help: %q", out)
	}
}
