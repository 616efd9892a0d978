package e2e

// Which lane carries the bytes through real kernel NATs: QUIC on the
// 5-tuple ICE punched between two port-restricted cones (server-reflexive
// candidates, each on its own socket), the data channel when only the
// TURN relay connects (pion drops QUIC-range bytes on relayed pairs).

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kin/internal/netlab"
)

var laneLog = regexp.MustCompile(`msg="peer connection" .*lane="([^"]+)"`)

func TestNATLanes(t *testing.T) {
	cells := []struct {
		a, b netlab.NATKind
		lane string
		size int64 // kin signal's relay moves ~1 MB/s in the lab
	}{
		{netlab.Restricted, netlab.Restricted, "direct, QUIC", 64 << 20},
		{netlab.Symmetric, netlab.Restricted, "relayed, data channel", 8 << 20},
	}
	for _, c := range cells {
		t.Run(string(c.a)+"-"+string(c.b), func(t *testing.T) {
			lab := netlab.New(t)
			url := "ws://203.0.113.1:7000"
			server := labUser(t, "server", lab.Internet(), url)
			server.start("signal", "--listen", "203.0.113.1:7000", "--turn", "203.0.113.1:3478").waitFor(`signaling server on`)
			ha, hb := lab.AddPeer(c.a), lab.AddPeer(c.b)
			alice := labUser(t, "alice", ha, url)
			bob := labUser(t, "bob", hb, url)
			alice.mustRun("friends", "add", "bob", strings.TrimSpace(bob.mustRun("id")), "--allow", "files")
			bob.mustRun("friends", "add", "alice", strings.TrimSpace(alice.mustRun("id")))
			inbox := filepath.Join(t.TempDir(), "inbox")
			agent := alice.start("--verbose", "up", "--dir", inbox)
			agent.waitFor(`kin is up`)

			file := filepath.Join(t.TempDir(), "big.bin")
			f, err := os.Create(file)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, c.size); err != nil {
				t.Fatal(err)
			}
			f.Close()
			want := h.Sum(nil)

			out, errs, code := bob.run("--verbose", "send", file, "alice", "--quiet")
			if code != 0 {
				t.Fatalf("kin send: exit %d\n%s%s", code, out, errs)
			}
			m := laneLog.FindStringSubmatch(errs)
			if m == nil || m[1] != c.lane {
				t.Errorf("%s x %s: sender's lane %v, want %q\n%s", c.a, c.b, m, c.lane, errs)
			}
			if m := agent.waitFor(laneLog.String()); m[1] != c.lane {
				t.Errorf("%s x %s: receiver's lane %q, want %q", c.a, c.b, m[1], c.lane)
			}
			got, err := os.ReadFile(filepath.Join(inbox, "big.bin"))
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(got); string(sum[:]) != string(want) {
				t.Fatalf("the file arrived different (%d bytes)", len(got))
			}
			t.Logf("%s x %s: %s, %d MiB, SHA-256 checked", c.a, c.b, c.lane, c.size>>20)
		})
	}
}
