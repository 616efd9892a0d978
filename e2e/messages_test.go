package e2e

// End-to-end tests of what people read, and of kin connect and kin send
// when the other side goes away.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// kin connect to a friend's kin up keeps its local port through a restart
// of the agent: it says it lost the connection, reconnects by itself, says
// so, and the same local address works again.
// portFriends are dad and kid on a signaling server of their own, kid
// allowed dad's port.
func portFriends(t *testing.T, port int) (dad, kid *user) {
	url, _ := startSignal(t)
	dad = newUser(t, "dad", "KIN_SIGNAL="+url)
	kid = newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", fmt.Sprintf("port=%d", port))
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	return dad, kid
}

func TestConnectReconnectsAfterAgentRestart(t *testing.T) {
	webPort, page, _ := webServer(t, 0)
	dad, kid := portFriends(t, webPort)
	agent := dad.start("up")
	agent.waitFor(`kin is up`)

	conn := kid.start("connect", fmt.Sprintf("dad:%d", webPort), "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("before the restart: page = %q", got)
	}

	agent.Interrupt()
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
	agent.Interrupt()
	agent.exit()
	conn.waitFor(`^lost the connection to dad`)
	dad.mustRun("friends", "rm", "kid")
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^kin: refused: the peer does not know your key`) // after the backoff: up to 30 s
	if code := conn.exit(); code != 1 {
		t.Errorf("after dad removed kid: exit %d:\n%s", code, conn.Output())
	}
}

// A sender notices a receiver killed mid-send (kill -9: no goodbye) within
// a few seconds (measured: 3.7-3.9 s on either lane, was 10 s on QUIC and 14 s
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
	cmd := kid.Command(context.Background(), "send", "-", "dad", "--name", "stream.bin")
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
	recv.Cmd.Process.Kill()
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

// Data piped to kin send is "a stream (size unknown)", never "1 file, 0 B",
// and its bytes show as they go.
func TestSendingAStreamSaysSo(t *testing.T) {
	a := startAgent(t)
	data := make([]byte, 3<<20)
	rand.Read(data)
	cmd := a.kid.Command(context.Background(), "send", "-", "dad", "--name", "stream.bin")
	cmd.Stdin = bytes.NewReader(data)
	var out lockedLines
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("kin send -: %v\n%s", err, out.String())
	}
	got, _ := os.ReadFile(filepath.Join(a.inbox, "stream.bin"))
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("the stream landed different (SHA-256)")
	}
	text := out.String()
	for _, want := range []string{"sending a stream (size unknown) to dad", " so far", "sent 1 file, 3.1 MB in "} {
		if !strings.Contains(text, want) {
			t.Errorf("kin send - says no %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "0 B") {
		t.Errorf("kin send - speaks of 0 B:\n%s", text)
	}
}

var movedRE = regexp.MustCompile(`^(sent|received) 1 file, ([0-9.]+) ([kMG]?)B in \S+ \([0-9.]+ [kMG]?B/s\)(?:, up to [0-9]+ lanes)?; ([0-9.]+) ([kMG]?)B were already there$`)

func bytesOf(num, unit string) float64 {
	f, _ := strconv.ParseFloat(num, 64)
	return f * map[string]float64{"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[unit]
}

// A ticket send the first receiver did not finish is finished by a second
// kin receive with the same ticket: both ends count only what moved this
// time (bytes and speed), say what was already there, and the sender's
// last line is that summary, not the first receiver's old error.
func TestResumedTicketSendEndsWithTheSummary(t *testing.T) {
	url, _ := startSignal(t)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	src := filepath.Join(t.TempDir(), "big.bin")
	const size = 256 << 20
	data := make([]byte, size)
	rand.Read(data)
	os.WriteFile(src, data, 0o600)
	want := sha256.Sum256(data)
	data = nil

	snd := kid.start("send", src)
	ticket := snd.waitFor(`^kin receive (kin1[a-z2-7]+)$`)[1]
	stranger := newUser(t, "stranger")
	dir := filepath.Join(t.TempDir(), "got")
	first := stranger.start("receive", ticket, "--dir", dir)
	for !partialHasBytes(filepath.Join(dir, ".kin-partial")) {
		select {
		case <-first.Done():
			t.Fatalf("the first receive ended before it was killed:\n%s", first.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	first.Cmd.Process.Kill()
	first.exit()

	out, errs, code := stranger.run("receive", ticket, "--dir", dir)
	if code != 0 {
		t.Fatalf("second receive: exit %d\n%s%s", code, out, errs)
	}
	if code := snd.exit(); code != 0 {
		t.Fatalf("send exit %d", code)
	}
	got := hashOf(t, filepath.Join(dir, "big.bin"))
	if got != want {
		t.Fatal("resumed file differs (SHA-256)")
	}
	lines := strings.Split(strings.TrimSpace(snd.Output()), "\n")
	last := lines[len(lines)-1]
	t.Logf("sender:\n%s\nsecond receiver:\n%s", snd.Output(), errs)
	for who, line := range map[string]string{"sender's last line": last, "receiver's summary": lastLine(errs)} {
		m := movedRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("%s is %q, want the summary with what was already there", who, line)
			continue
		}
		moved, already := bytesOf(m[2], m[3]), bytesOf(m[4], m[5])
		if already <= 0 || moved+already < size*0.98 || moved > size-already+1e6 {
			t.Errorf("%s: moved %.0f, already %.0f of %d", who, moved, already, size)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func hashOf(t *testing.T, path string) [32]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// kin share and kin receive print commands friends can run as printed:
// each friend knows us by a name we cannot know, or by our kin ID, which
// kin connect and kin send take in place of the name.
func TestPrintedCommandsForFriendsWork(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, _ := webServer(t, 0)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url)
	alice.mustRun("friends", "add", "bobby", strings.TrimSpace(bob.mustRun("id")), "--allow", fmt.Sprintf("port=%d", webPort), "--allow", "files")
	bob.mustRun("friends", "add", "al", strings.TrimSpace(alice.mustRun("id")))

	share := alice.start("share", fmt.Sprint(webPort))
	m := share.waitFor(`^friends allowed port (\d+) \(bobby\) can also run: kin connect NAME:(\d+)  \(NAME: what they call you in their friends list; or your kin ID: kin connect ([a-z2-7]{16}):(\d+)\)$`)
	if m[1] != fmt.Sprint(webPort) || m[4] != m[1] {
		t.Fatalf("share names port %s / %s", m[1], m[4])
	}
	conn := bob.start("connect", m[3]+":"+m[4], "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("page through kin connect ID:PORT = %q", got)
	}
	conn.Interrupt()
	conn.exit()
	share.Interrupt()
	share.exit()

	inbox := t.TempDir()
	recv := alice.start("receive", "--dir", inbox)
	m = recv.waitFor(`^friends allowed files \(bobby\) run: kin send FILE NAME  \(NAME: what they call you in their friends list; or your kin ID: kin send FILE ([a-z2-7]{16})\)$`)
	file := filepath.Join(t.TempDir(), "note.txt")
	os.WriteFile(file, []byte("to alice by her ID"), 0o600)
	bob.mustRun("send", file, m[1])
	recv.waitFor(`^` + regexp.QuoteMeta(filepath.Join(inbox, "note.txt")) + `$`)
	if got, _ := os.ReadFile(filepath.Join(inbox, "note.txt")); string(got) != "to alice by her ID" {
		t.Fatalf("note.txt = %q", got)
	}
}

// A name Windows cannot take goes to a receiver that is not on Windows as
// it is, with a note that says so and offers --rename; --rename sends it
// with _ in place of what Windows refuses.
func TestNamesNotPortableToWindows(t *testing.T) {
	a := startAgent(t)
	name := filepath.Join(t.TempDir(), "notes: what?.txt")
	os.WriteFile(name, []byte("colon and question mark"), 0o600)
	_, errs, code := a.kid.run("send", name, "dad")
	if code != 0 {
		t.Fatalf("send: exit %d\n%s", code, errs)
	}
	if want := "note: 1 name not portable to Windows (" + name + "): a receiver on Windows refuses them, others keep them as they are; --rename sends them"; !strings.Contains(errs, want) {
		t.Errorf("send says no %q:\n%s", want, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(a.inbox, "notes: what?.txt")); string(got) != "colon and question mark" {
		t.Errorf("kept as it is: %q", got)
	}
	_, errs, code = a.kid.run("send", "--rename", name, "dad")
	if code != 0 || !strings.Contains(errs, "renamed: "+name+" is sent as notes_ what_.txt") || strings.Contains(errs, "note:") {
		t.Fatalf("send --rename: exit %d\n%s", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(a.inbox, "notes_ what_.txt")); string(got) != "colon and question mark" {
		t.Errorf("renamed: %q", got)
	}
}

// kin connect FRIEND:PORT/udp keeps its UDP socket through a restart of
// the friend's agent, and datagrams go through again once it is back.
func TestConnectUDPReconnectsAfterAgentRestart(t *testing.T) {
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	port := echo.LocalAddr().(*net.UDPAddr).Port
	url, _ := startSignal(t)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", fmt.Sprintf("port=%d/udp", port))
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	agent := dad.start("up")
	agent.waitFor(`kin is up`)
	conn := kid.start("connect", fmt.Sprintf("dad:%d/udp", port), "--listen", "127.0.0.1:0")
	local := conn.waitFor(`forwarding (127\.0\.0\.1:\d+)/udp -> dad:`)[1]
	c, err := net.Dial("udp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string) {
		t.Helper()
		buf := make([]byte, 100)
		for try := 0; try < 20; try++ { // datagrams may be lost; one answer is enough
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(buf); err == nil && string(buf[:n]) == msg {
				return
			}
		}
		t.Fatalf("no echo of %q through %s", msg, local)
	}
	roundTrip("before")
	agent.Interrupt()
	agent.exit()
	conn.waitFor(`^lost the connection to dad .* ` + regexp.QuoteMeta(local) + `/udp stays open$`)
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^connected to dad again`)
	roundTrip("after")
}
