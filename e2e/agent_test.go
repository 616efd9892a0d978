package e2e

// End-to-end tests of the agent (kin up) and what friends do with it:
// shells, commands, OpenSSH through kin pipe, files.

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentEnv is dad running kin up, kid allowed shell and files.
type agentEnv struct {
	dad, kid *user
	agent    *proc
	inbox    string
}

func startAgent(t *testing.T) *agentEnv {
	url, _ := startSignal(t)
	a := &agentEnv{inbox: filepath.Join(t.TempDir(), "inbox")}
	a.dad = newUser(t, "dad", "KIN_SIGNAL="+url)
	a.kid = newUser(t, "kid", "KIN_SIGNAL="+url)
	dadKey := strings.TrimSpace(a.dad.mustRun("id"))
	kidKey := strings.TrimSpace(a.kid.mustRun("id"))
	a.dad.mustRun("friends", "add", "kid", kidKey, "--allow", "shell", "--allow", "files")
	a.kid.mustRun("friends", "add", "dad", dadKey)
	// The tests run as root: shells need the flag that says so.
	a.agent = a.dad.start("up", "--dir", a.inbox, "--allow-root-shell")
	a.agent.waitFor(`kin is up`)
	return a
}

func requireTool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; .ci/run installs it", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func TestShellCommandsAndExitCodes(t *testing.T) {
	a := startAgent(t)
	out, errs, code := a.kid.run("shell", "dad", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if code != 7 || out != "out\n" || !strings.Contains(errs, "err\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, _, code := a.kid.run("shell", "dad", "--", "no-such-command-for-kin"); code != 127 {
		t.Errorf("missing command: exit %d, want 127", code)
	}
	// Commands from a pipe, no terminal.
	cmd := exec.Command(kinBin, "shell", "dad")
	cmd.Env = a.kid.Env
	cmd.Stdin = strings.NewReader("echo piped-$((6*7))\nexit 3\n")
	b, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(b), "piped-42") {
		t.Fatalf("piped shell: %v %q", err, b)
	}
	// The agent logged who did what.
	a.agent.waitFor(`who=.*kid.*command=`)
}

func TestShellRefusedWithoutPermission(t *testing.T) {
	a := startAgent(t)
	url := strings.TrimPrefix(envOf(a.dad, "KIN_SIGNAL"), "KIN_SIGNAL=")
	friend := newUser(t, "friend", "KIN_SIGNAL="+url)
	dadKey := strings.TrimSpace(a.dad.mustRun("id"))
	friend.mustRun("friends", "add", "dad", dadKey)
	a.dad.mustRun("friends", "add", "friend", strings.TrimSpace(friend.mustRun("id")), "--allow", "files")
	_, errs, code := friend.run("shell", "dad", "--", "true")
	if code == 0 || !strings.Contains(errs, "may not open a shell") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	a.agent.waitFor(`refused shell`)
	// A stranger (dad does not know them) gets nothing at all.
	stranger := newUser(t, "stranger", "KIN_SIGNAL="+url)
	stranger.mustRun("friends", "add", "dad", dadKey)
	if _, errs, code := stranger.run("shell", "dad", "--", "true"); code == 0 || !strings.Contains(errs, "does not know your key") {
		t.Fatalf("stranger: exit %d, stderr %q", code, errs)
	}
}

// A broken edit of the friends file never keeps a friend in: with kin up
// running, kid's line is replaced by a line with a typo (and carol's good
// line is added). The agent skips the broken line with a warning naming
// it, refuses kid at once, and lets carol in: every good line applies.
func TestBrokenFriendsLineLetsNobodyInAndTheRestApplies(t *testing.T) {
	a := startAgent(t)
	if out := a.kid.mustRun("shell", "dad", "--", "echo", "in"); out != "in\n" {
		t.Fatalf("before the edit: %q", out)
	}
	carol := newUser(t, "carol", envOf(a.dad, "KIN_SIGNAL"))
	carol.mustRun("friends", "add", "dad", strings.TrimSpace(a.dad.mustRun("id")))
	kidKey := strings.TrimSpace(a.kid.mustRun("id"))
	carolKey := strings.TrimSpace(carol.mustRun("id"))
	friends := `name="carol",permit-shell ` + carolKey + "\n" +
		`name="kid",permit-shell,permit-filez ` + kidKey + "\n"
	if err := os.WriteFile(filepath.Join(a.dad.Home, "friends"), []byte(friends), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := a.kid.run("shell", "dad", "--", "echo", "in"); code == 0 || !strings.Contains(errs, "does not know your key") {
		t.Fatalf("kid after the broken edit: exit %d, stderr %q", code, errs)
	}
	a.agent.waitFor(`friends file line skipped.* line=2 .*permit-filez`)
	if out := carol.mustRun("shell", "dad", "--", "echo", "carol"); out != "carol\n" {
		t.Fatalf("carol: %q", out)
	}
	// dad's own tools still work on the file, and name the line.
	if _, errs, _ := a.dad.run("friends", "ls"); !strings.Contains(errs, "line 2 is skipped") {
		t.Errorf("friends ls: %q", errs)
	}
}

func envOf(u *user, prefix string) string {
	for i := len(u.Env) - 1; i >= 0; i-- {
		if strings.HasPrefix(u.Env[i], prefix+"=") {
			return u.Env[i]
		}
	}
	return ""
}

func TestNoOrphansWhenShellClientDies(t *testing.T) {
	a := startAgent(t)
	marker := fmt.Sprintf("%d", 4000+time.Now().UnixNano()%1000)
	sh := a.kid.start("shell", "dad", "--", "sleep", marker)
	deadline := time.Now().Add(20 * time.Second)
	for !sleeping(marker) {
		if time.Now().After(deadline) {
			t.Fatal("remote sleep never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	sh.Cmd.Process.Signal(syscall.SIGKILL) // laptop lid: no goodbye
	deadline = time.Now().Add(30 * time.Second)
	for sleeping(marker) {
		if time.Now().After(deadline) {
			exec.Command("pkill", "-f", "sleep "+marker).Run()
			t.Fatal("the remote command outlived the connection")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sleeping(marker string) bool {
	return exec.Command("pgrep", "-f", "^sleep "+marker+"$").Run() == nil
}

func TestShellEndsClearlyWhenAgentDies(t *testing.T) {
	a := startAgent(t)
	sh := a.kid.start("shell", "dad", "--", "sleep", "60")
	a.agent.waitFor(`command=`)
	a.agent.Cmd.Process.Signal(syscall.SIGKILL)
	if code := sh.exit(); code == 0 {
		t.Fatal("kin shell exited 0 after losing the agent")
	}
	if !strings.Contains(sh.Output(), "connection was lost") {
		t.Errorf("no clear message:\n%s", sh.Output())
	}
	exec.Command("pkill", "-f", "^sleep 60$").Run()
}

func TestTerminalUnderTmux(t *testing.T) {
	tmux := requireTool(t, "tmux")
	a := startAgent(t)
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	env := strings.Join(append([]string{"env"}, quoteAll(a.kid.Env)...), " ")
	run := func(args ...string) string {
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v %s", args, err, out)
		}
		return string(out)
	}
	run("new-session", "-d", "-x", "100", "-y", "30", env+" "+kinBin+" shell dad")
	defer exec.Command(tmux, "-S", sock, "kill-server").Run()
	screen := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := run("capture-pane", "-p")
			if strings.Contains(s, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("screen lacks %q:\n%s", want, s)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	run("send-keys", "echo READY-$((40+2))", "Enter")
	screen("READY-42")
	run("send-keys", "stty size", "Enter")
	screen("30 100")
	run("resize-window", "-x", "120", "-y", "40")
	time.Sleep(500 * time.Millisecond)
	run("send-keys", "clear; stty size", "Enter")
	screen("40 120")
	run("send-keys", "exit", "Enter")
}

func quoteAll(env []string) []string {
	q := make([]string, len(env))
	for i, e := range env {
		q[i] = "'" + strings.ReplaceAll(e, "'", `'\''`) + "'"
	}
	return q
}

func TestOpenSSHThroughKinPipe(t *testing.T) {
	sshBin := requireTool(t, "ssh")
	scpBin := requireTool(t, "scp")
	a := startAgent(t)
	config := filepath.Join(t.TempDir(), "ssh_config")
	block := a.kid.mustRun("ssh-config", "dad")
	os.WriteFile(config, []byte(block), 0o600)
	ssh := func(bin string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"-F", config, "-o", "BatchMode=yes"}, args...)...)
		cmd.Env = a.kid.Env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := ssh(sshBin, "dad", "echo hello from $((40+2))")
	if err != nil || !strings.Contains(out, "hello from 42") {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	// scp both ways (sftp subsystem).
	src := filepath.Join(t.TempDir(), "photo.bin")
	data := make([]byte, 3<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	dst := filepath.Join(t.TempDir(), "copied.bin")
	if out, err := ssh(scpBin, src, "dad:"+dst); err != nil {
		t.Fatalf("scp: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(dst)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("scp'd file differs")
	}
	// A key dad does not know is refused by kin's SSH server.
	other := filepath.Join(t.TempDir(), "other")
	exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).Run()
	kidKey := filepath.Join(a.kid.Home, "identity")
	os.WriteFile(config, []byte(strings.Replace(block, "IdentityFile "+kidKey, "IdentityFile "+other, 1)), 0o600)
	if !strings.Contains(block, "IdentityFile "+kidKey) {
		t.Fatalf("ssh-config block lacks the identity:\n%s", block)
	}
	if out, err := ssh(sshBin, "dad", "true"); err == nil {
		t.Fatalf("unknown key got in:\n%s", out)
	}
}

// kin up as root gives a friend allowed a shell no root shell, unless
// its owner says so with --allow-root-shell (and is warned).
func TestRootShellNeedsTheFlag(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs to run as root")
	}
	url, _ := startSignal(t)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", "shell,files")
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))

	agent := dad.start("up", "--dir", t.TempDir())
	agent.waitFor(`runs as root: friends allowed a shell are refused`)
	agent.waitFor(`kin is up`)
	out, errs, code := kid.run("shell", "dad", "--", "id", "-u")
	if code == 0 || out != "" || !strings.Contains(errs, "runs as root and gives no root shells") || !strings.Contains(errs, "own user") {
		t.Fatalf("root shell without the flag: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// Files still work: only the shell is refused.
	src := filepath.Join(t.TempDir(), "note.txt")
	os.WriteFile(src, []byte("hi"), 0o644)
	kid.mustRun("send", src, "dad")
	agent.Interrupt()
	if code := agent.exit(); code != 0 {
		t.Fatalf("agent exit %d", code)
	}

	agent = dad.start("up", "--dir", t.TempDir(), "--allow-root-shell")
	agent.waitFor(`--allow-root-shell: every friend allowed a shell gets a ROOT shell`)
	agent.waitFor(`kin is up`)
	if out, errs, code := kid.run("shell", "dad", "--", "id", "-u"); code != 0 || out != "0\n" {
		t.Fatalf("root shell with the flag: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestSendToFriendAndWithTicket(t *testing.T) {
	a := startAgent(t)
	src := t.TempDir()
	tree := filepath.Join(src, "photos")
	os.MkdirAll(filepath.Join(tree, "2026"), 0o755)
	sums := map[string][32]byte{}
	for _, name := range []string{"2026/a.jpg", "b.jpg"} {
		b := make([]byte, 1<<20+len(name))
		rand.Read(b)
		os.WriteFile(filepath.Join(tree, name), b, 0o644)
		sums[name] = sha256.Sum256(b)
	}
	a.kid.mustRun("send", tree, "dad")
	for name, want := range sums {
		got, err := os.ReadFile(filepath.Join(a.inbox, "photos", name))
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("%s at dad's: %v", name, err)
		}
	}
	// Without a friend: a ticket, and kin receive with it.
	file := filepath.Join(src, "report.pdf")
	data := make([]byte, 2<<20)
	rand.Read(data)
	os.WriteFile(file, data, 0o600)
	snd := a.kid.start("send", file)
	ticket := snd.waitFor(`^kin receive (kin1[a-z2-7]+)$`)[1]
	stranger := newUser(t, "stranger")
	dir := filepath.Join(t.TempDir(), "got")
	stranger.mustRun("receive", ticket, "--dir", dir)
	got, _ := os.ReadFile(filepath.Join(dir, "report.pdf"))
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("received file differs")
	}
	if code := snd.exit(); code != 0 {
		t.Fatalf("send exit %d", code)
	}
}

func TestStatus(t *testing.T) {
	a := startAgent(t)
	out := a.kid.mustRun("status")
	if !regexp.MustCompile(`dad\s+yes\s+nothing`).MatchString(out) || !strings.Contains(out, "agent:     down") {
		t.Errorf("kid's status:\n%s", out)
	}
	out = a.dad.mustRun("status")
	if !strings.Contains(out, "agent:     up") || !regexp.MustCompile(`kid\s+no\s+shell, files`).MatchString(out) {
		t.Errorf("dad's status:\n%s", out)
	}
}

func TestAgentSurvivesSignalingRestart(t *testing.T) {
	server := newUser(t, "server")
	sig := server.start("signal", "--listen", "127.0.0.1:0")
	url := sig.waitFor(`signaling server on (ws://127\.0\.0\.1:\d+)`)[1]
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", "shell")
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	agent := dad.start("up", "--allow-root-shell")
	agent.waitFor(`kin is up`)
	if out, _, code := kid.run("shell", "dad", "--", "echo", "before"); code != 0 || out != "before\n" {
		t.Fatalf("before restart: %d %q", code, out)
	}
	sig.Interrupt()
	sig.exit()
	sig2 := server.start("signal", "--listen", strings.TrimPrefix(url, "ws://"))
	sig2.waitFor(`signaling server on`)
	// The agent re-registers by itself (backoff starts at 250 ms).
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, code := kid.run("shell", "dad", "--", "echo", "after")
		if code == 0 && out == "after\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent unreachable after the signaling server restarted: %d %q", code, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
