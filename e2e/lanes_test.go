package e2e

// kin send on several lanes (QUIC connections on one 5-tuple), forced with
// KIN_LANES: whole files, resume after kill -9, and a lossy link.

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var lanesRE = regexp.MustCompile(`up to (\d+) lanes`)

// lanesUsed reads "up to N lanes" from a summary (absent: one).
func lanesUsed(out string) int {
	if m := lanesRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

func randomFile(t *testing.T, size int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4<<20)
	for written := 0; written < size; written += len(chunk) {
		rand.Read(chunk)
		f.Write(chunk[:min(len(chunk), size-written)])
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestSendOnForcedLanes(t *testing.T) {
	a := startAgent(t)
	a.kid.Env = append(a.kid.Env, "KIN_LANES=4")
	src := randomFile(t, 64<<20)
	_, errs, code := a.kid.run("send", src, "dad")
	if code != 0 {
		t.Fatalf("kin send: exit %d: %s", code, errs)
	}
	if n := lanesUsed(errs); n != 4 {
		t.Errorf("used %d lanes, forced 4: %q", n, errs)
	}
	if hashFile(t, filepath.Join(a.inbox, "big.bin")) != hashFile(t, src) {
		t.Fatal("the file sent on 4 lanes differs (SHA-256)")
	}
}

// prefixOf is what a receiver's partial file holds that a resume starts
// from: the contiguous prefix its sidecar names, else the whole file.
func prefixOf(t *testing.T, part string) int64 {
	st, err := os.Stat(part)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(strings.TrimSuffix(part, ".part") + ".have")
	if err != nil {
		return st.Size()
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0
	}
	return min(v, st.Size())
}

func TestMultiLaneSendKilledResumes(t *testing.T) {
	a := startAgent(t)
	a.kid.Env = append(a.kid.Env, "KIN_LANES=4")
	const size = 256 << 20
	src := randomFile(t, size)
	want := hashFile(t, src)

	// The first send dies (kill -9) when the receiver has about 40%.
	first := a.kid.start("send", src, "dad")
	partial := filepath.Join(a.inbox, ".kin-partial")
	deadline := time.Now().Add(2 * time.Minute)
	var part string
	for {
		if time.Now().After(deadline) {
			t.Fatal("the receiver had not 40% after 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
		matches, _ := filepath.Glob(filepath.Join(partial, "*.part"))
		if len(matches) == 1 {
			if st, err := os.Stat(matches[0]); err == nil && st.Size() >= size*4/10 {
				part = matches[0]
				break
			}
		}
	}
	first.Cmd.Process.Signal(syscall.SIGKILL)
	first.exit()
	if _, err := os.Stat(filepath.Join(a.inbox, "big.bin")); err == nil {
		t.Fatal("a partial file appeared under its final name")
	}
	kept := prefixOf(t, part)

	errs := resend(t, a, src, size, kept)
	if n := lanesUsed(errs); n != 4 {
		t.Errorf("resumed on %d lanes, forced 4: %q", n, errs)
	}
	if hashFile(t, filepath.Join(a.inbox, "big.bin")) != want {
		t.Fatal("the resumed file differs (SHA-256)")
	}
}

// Lanes over a far, lossy link (20 Mbit/s, 40 ms, 1% loss each way): the
// file arrives whole.
func TestLanesOverALossyLink(t *testing.T) {
	kid, inbox := lossyLinkAgent(t, "KIN_LANES=4")

	src := randomFile(t, 6<<20)
	began := time.Now()
	_, errs, code := kid.run("send", src, "dad")
	if code != 0 {
		t.Fatalf("kin send over the lossy link: exit %d: %s", code, errs)
	}
	t.Logf("6 MiB on %d lanes over 20 Mbit/s, 40 ms, 1%% loss in %v", lanesUsed(errs), time.Since(began).Round(time.Millisecond))
	if n := lanesUsed(errs); n != 4 {
		t.Errorf("used %d lanes, forced 4: %q", n, errs)
	}
	if hashFile(t, filepath.Join(inbox, "big.bin")) != hashFile(t, src) {
		t.Fatal("the file that crossed the lossy link on lanes differs (SHA-256)")
	}
}

// With a ticket the sender is the one that accepted the connection: it
// opens the lanes towards the receiver, which dialled.
func TestTicketSendOnForcedLanes(t *testing.T) {
	sender := newUser(t, "sender", "KIN_LANES=4")
	src := randomFile(t, 32<<20)
	snd := sender.start("send", src)
	ticket := snd.waitFor(`^kin receive (kin1[a-z2-7]+)$`)[1]
	receiver := newUser(t, "receiver")
	dir := filepath.Join(t.TempDir(), "got")
	_, errs, code := receiver.run("receive", ticket, "--dir", dir)
	if code != 0 {
		t.Fatalf("kin receive: exit %d: %s", code, errs)
	}
	if n := lanesUsed(errs); n != 4 {
		t.Errorf("received on %d lanes, forced 4: %q", n, errs)
	}
	if hashFile(t, filepath.Join(dir, "big.bin")) != hashFile(t, src) {
		t.Fatal("the file received on 4 lanes differs (SHA-256)")
	}
	if code := snd.exit(); code != 0 {
		t.Fatalf("send exit %d", code)
	}
	if n := lanesUsed(snd.Output()); n != 4 {
		t.Errorf("sent on %d lanes, forced 4: %q", n, snd.Output())
	}
}

// One real QUIC lane is cut mid-way (its connection closed, as a lost path
// would end it) while a file crosses the lossy link on four lanes: its
// chunks go on the others, a new lane replaces it, and the file arrives
// whole.
func TestLaneCutMidwayOverALossyLink(t *testing.T) {
	kid, inbox := lossyLinkAgent(t, "KIN_LANES=4", "KIN_TEST_CUT_LANE=1048576")

	src := randomFile(t, 6<<20)
	_, errs, code := kid.run("--verbose", "send", src, "dad")
	if code != 0 {
		t.Fatalf("kin send with a lane cut: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "cutting a lane") {
		t.Fatalf("no lane was cut (KIN_TEST_CUT_LANE): %s", errs)
	}
	if !regexp.MustCompile(`lane lost; its chunks go on the other lanes.* chunks=[1-9]`).MatchString(errs) {
		t.Errorf("the cut lane gave no chunks back to the others: %s", errs)
	}
	if hashFile(t, filepath.Join(inbox, "big.bin")) != hashFile(t, src) {
		t.Fatal("the file sent with a lane cut mid-way differs (SHA-256)")
	}
}

// A sender whose own kin up runs dials through it (one presence per
// identity) and still spreads a big file over lanes: the agent opens them
// on its connection and carries their bytes (agent.OpLane).
func TestSendThroughOwnAgentOnLanes(t *testing.T) {
	a := startAgent(t)
	mine := a.kid.start("up", "--dir", filepath.Join(t.TempDir(), "kid-inbox"))
	mine.waitFor(`kin is up`)
	a.kid.Env = append(a.kid.Env, "KIN_LANES=4")
	src := randomFile(t, 64<<20)
	_, errs, code := a.kid.run("--verbose", "send", src, "dad")
	if code != 0 {
		t.Fatalf("kin send: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "dialing through the agent") {
		t.Fatalf("the send did not go through kid's agent: %s", errs)
	}
	if n := lanesUsed(errs); n != 4 {
		t.Errorf("used %d lanes through the agent, forced 4: %q", n, errs)
	}
	if hashFile(t, filepath.Join(a.inbox, "big.bin")) != hashFile(t, src) {
		t.Fatal("the file sent on lanes through the agent differs (SHA-256)")
	}
}

// kin connect whose own kin up runs dials through it and still carries
// each forwarded connection on a QUIC stream of its own (agent.OpStream),
// once the connection has shown it runs end to end.
func TestConnectThroughOwnAgentOnStreams(t *testing.T) {
	webPort, page, _ := webServer(t, 0)
	dad, kid := portFriends(t, webPort)
	dad.start("up").waitFor(`kin is up`)
	kid.start("up", "--dir", filepath.Join(t.TempDir(), "kid-inbox")).waitFor(`kin is up`)

	conn := kid.start("--verbose", "connect", fmt.Sprintf("dad:%d", webPort), "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]
	conn.waitFor(`dialing through the agent`)
	// Each GET on a connection of its own. A forward that starts before
	// the bindings were compared (a round trip after connecting) goes
	// inside SSH; later ones go on streams.
	web := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 50 && !strings.Contains(conn.Output(), `on="QUIC stream"`); i++ {
		resp, err := web.Get("http://" + local + "/")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != page {
			t.Fatalf("page = %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond) // the log line follows the forward
	}
	conn.waitFor(`msg="forwarded connection" .*on="QUIC stream"`)
}
