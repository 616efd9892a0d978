package e2e

// End-to-end tests of pairing without copying keys: kin invite / kin join.

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

const joinRE = `^kin join (kin1[a-z2-7]+)$`

// invite runs kin invite with the agent up and returns the join line's
// invite.
func invite(t *testing.T, u *user, args ...string) string {
	t.Helper()
	out := u.mustRun(append([]string{"invite"}, args...)...)
	m := regexp.MustCompile(`(?m)` + joinRE).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("kin invite printed %q", out)
	}
	return m[1]
}

func TestInviteJoinThenShellWithNoFriendsAdd(t *testing.T) {
	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	agent := alice.start("up", "--dir", t.TempDir(), "--allow-root-shell")
	agent.waitFor(`kin is up`)
	// One agent per KIN_HOME: that is how kin invite knows one answers.
	if _, errs, code := alice.run("up"); code == 0 || !strings.Contains(errs, "kin up is already running") {
		t.Fatalf("second kin up: exit %d, stderr %q", code, errs)
	}

	inv := invite(t, alice, "dad", "--allow", "shell")
	out, errs, code := dad.run("join", inv)
	if code != 0 {
		t.Fatalf("join: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, `alice added you to their friends as "dad"; you may use on their computer: shell`) ||
		!strings.Contains(out, "added alice (") {
		t.Errorf("joiner printed:\n%s", out)
	}
	agent.waitFor(`dad joined: added dad \(\w+\) to your friends, allowed: shell`)

	// Both friends files say so: the joiner's key with shell on alice's
	// side, alice's key with nothing on dad's.
	dadKey := strings.TrimSpace(dad.mustRun("id"))
	aliceKey := strings.TrimSpace(alice.mustRun("id"))
	if f := readFile(t, alice.Home+"/friends"); !strings.Contains(f, `name="dad",permit-shell `+dadKey) {
		t.Errorf("alice's friends file:\n%s", f)
	}
	if f := readFile(t, dad.Home+"/friends"); !strings.Contains(f, `name="alice" `+aliceKey) {
		t.Errorf("dad's friends file:\n%s", f)
	}

	// The point of it all: a shell, with no kin friends add anywhere.
	if out := dad.mustRun("shell", "alice", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("kin shell printed %q", out)
	}

	// The same invite again (by someone else, or dad once more).
	other := newUser(t, "other", "KIN_SIGNAL="+url)
	_, errs, code = other.run("join", inv)
	if code == 0 || !strings.Contains(errs, "this invite was already used") {
		t.Fatalf("second join: exit %d, stderr %q", code, errs)
	}
	if strings.Contains(readFile(t, alice.Home+"/friends"), "other") {
		t.Fatal("a used invite added someone")
	}
	if out := alice.mustRun("invite", "--list"); !regexp.MustCompile(`dad\s+shell\s+used`).MatchString(out) {
		t.Errorf("invite --list:\n%s", out)
	}
}

func TestInviteExpiredAndRevokedAreRefused(t *testing.T) {
	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url)
	agent := alice.start("up", "--dir", t.TempDir(), "--allow-root-shell")
	agent.waitFor(`kin is up`)

	expired := invite(t, alice, "bob", "--allow", "files", "--for", "1s")
	revoked := invite(t, alice, "bobby", "--allow", "shell")
	if out := alice.mustRun("invite", "--revoke", "bobby"); !strings.Contains(out, "revoked the invite for bobby") {
		t.Errorf("revoke printed %q", out)
	}
	_, errs, code := bob.run("join", revoked)
	if code == 0 || !strings.Contains(errs, "this invite was revoked") {
		t.Fatalf("revoked invite: exit %d, stderr %q", code, errs)
	}

	// Wait until the 1s invite has expired by alice's own account.
	deadline := time.Now().Add(30 * time.Second)
	for !regexp.MustCompile(`bob\s+files\s+expired`).MatchString(alice.mustRun("invite", "--list")) {
		if time.Now().After(deadline) {
			t.Fatal("the invite never showed as expired")
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, errs, code = bob.run("join", expired)
	if code == 0 || !strings.Contains(errs, "this invite has expired") {
		t.Fatalf("expired invite: exit %d, stderr %q", code, errs)
	}
	agent.waitFor(`refused join`)
	for _, f := range []string{alice.Home + "/friends", bob.Home + "/friends"} {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "bob") {
			t.Errorf("%s records a refused join:\n%s", f, b)
		}
	}
}

// Without an agent and without a signaling server, kin invite runs one
// itself and stays online until the invite is used.
func TestInviteStaysOnlineWithoutAnAgent(t *testing.T) {
	alice := newUser(t, "alice")
	bob := newUser(t, "bob")
	inv := alice.start("invite", "bob", "--allow", "files,port=8080")
	ticket := inv.waitFor(joinRE)[1]
	out, errs, code := bob.run("join", "--name", "ally", ticket)
	if code != 0 {
		t.Fatalf("join: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "you may use on their computer: files,port=8080") || !strings.Contains(out, "added ally (") {
		t.Errorf("joiner printed:\n%s", out)
	}
	inv.waitFor(`bob joined: added bob \(\w+\) to your friends, allowed: files,port=8080`)
	if code := inv.exit(); code != 0 {
		t.Fatalf("kin invite exit %d after the join:\n%s", code, inv.Output())
	}
	if !strings.Contains(readFile(t, bob.Home+"/friends"), `name="ally" `) {
		t.Error("bob did not record alice as ally")
	}
	// Its built-in signaling server is gone with it: the invite's peer is
	// offline, and the joiner hears the invite is spent, not a socket error.
	carol := newUser(t, "carol")
	if _, errs, code := carol.run("join", ticket); code == 0 || !strings.Contains(errs, "cannot reach the signaling server in alice's invite") {
		t.Fatalf("join after kin invite exited: exit %d, stderr %q", code, errs)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
