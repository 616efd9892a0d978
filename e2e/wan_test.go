package e2e

// kin over an emulated far, slow, lossy link (internal/netem).

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kin/internal/netem"
	"kin/internal/netlab"
)

// TestSendOverALossyLink sends a file across a 20 Mbit/s link with a
// 40 ms round trip that drops 1% of packets each way: every handshake
// (signaling, ICE, DTLS, SCTP, SSH) and the transfer itself must recover
// from losses, and the file must arrive whole.
func TestSendOverALossyLink(t *testing.T) {
	kid, inbox := lossyLinkAgent(t)

	src := filepath.Join(t.TempDir(), "photos.bin")
	b := make([]byte, 1<<20)
	rand.Read(b)
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, errs, code := kid.run("send", src, "dad"); code != 0 {
		t.Fatalf("kin send over the lossy link: exit %d: %s", code, errs)
	}
	t.Logf("1 MiB over %s in %v", "20 Mbit/s, 40 ms, 1% loss", time.Since(began).Round(time.Millisecond))
	if hashFile(t, filepath.Join(inbox, "photos.bin")) != hashFile(t, src) {
		t.Fatal("the file that crossed the lossy link differs (SHA-256)")
	}
}

// lossyLinkAgent puts dad's kin up (inbox returned) and kid, who may send
// him files, on the two ends of a 20 Mbit/s link with a 40 ms round trip
// that drops 1% of packets each way; env adds settings for both.
func lossyLinkAgent(t *testing.T, env ...string) (kid *user, inbox string) {
	t.Helper()
	netlab.Require(t, netem.Available())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	link, err := netem.Start(ctx, netem.Link{Rate: 20e6, RTT: 40 * time.Millisecond, Loss: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	url := "ws://" + link.B.Addr + ":7000"
	on := func(name string, side *netem.Side) *user {
		u := newUser(t, name, append([]string{"KIN_SIGNAL=" + url, "KIN_ICE_INTERFACES=" + side.Dev}, env...)...)
		u.NS = side.NS
		return u
	}
	on("server", link.B).start("signal", "--listen", link.B.Addr+":7000").waitFor(`signaling server on`)
	dad, kid := on("dad", link.B), on("kid", link.A)
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", "files")
	inbox = filepath.Join(t.TempDir(), "inbox")
	dad.start("up", "--dir", inbox).waitFor(`kin is up`)
	return kid, inbox
}
