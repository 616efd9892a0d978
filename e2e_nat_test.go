package main

// kin through real kernel NATs: the network-namespace lab.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kin/internal/netlab"
)

const natPayload = 4 << 20

// payload is the same pseudo-random bytes in every process.
func payload() []byte {
	b := make([]byte, natPayload)
	rand.NewChaCha8([32]byte{'k', 'i', 'n'}).Read(b)
	return b
}

// helper runs the test binary as a tool inside a lab namespace:
// KIN_E2E_SERVE=addr serves the payload; KIN_E2E_FETCH=url prints its SHA-256.
func helper() bool {
	if addr := os.Getenv("KIN_E2E_SERVE"); addr != "" {
		body := payload()
		srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
		go func() { time.Sleep(2 * time.Minute); os.Exit(0) }()
		fmt.Println(srv.ListenAndServe())
		os.Exit(1)
	}
	if url := os.Getenv("KIN_E2E_FETCH"); url != "" {
		c := &http.Client{Timeout: 60 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		h := sha256.New()
		io.Copy(h, resp.Body)
		fmt.Print(hex.EncodeToString(h.Sum(nil)))
		os.Exit(0)
	}
	return false
}

func labUser(t *testing.T, name string, h *netlab.Host, signal string) *user {
	home := filepath.Join(t.TempDir(), name)
	env := append(os.Environ(), "KIN_HOME="+home, "USER="+name, "KIN_SIGNAL="+signal)
	// ICE uses the namespace's own interfaces here, not lo.
	for i, e := range env {
		if strings.HasPrefix(e, "KIN_ICE_INTERFACES=") {
			env[i] = "KIN_ICE_INTERFACES="
		}
	}
	return &user{t: t, home: home, env: env, ns: h.NS}
}

func TestNATMatrix(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(payload())
	cells := []struct{ a, b netlab.NATKind }{
		{netlab.Public, netlab.Restricted},
		{netlab.Restricted, netlab.Restricted},
	}
	for _, cell := range cells {
		t.Run(string(cell.a)+"-"+string(cell.b), func(t *testing.T) {
			lab := netlab.New(t)
			inet := lab.Internet()
			url := "ws://203.0.113.1:7000"
			server := labUser(t, "server", inet, url)
			sig := server.start("signal", "--listen", "203.0.113.1:7000", "--stun", "203.0.113.1:3478", "--stun-url", "stun:203.0.113.1:3478")
			sig.waitFor(`signaling server on`)
			ha, hb := lab.AddPeer(cell.a), lab.AddPeer(cell.b)

			web := ha.Command(context.Background(), "env", "KIN_E2E_SERVE=127.0.0.1:8080", self)
			if err := web.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { web.Process.Kill(); web.Wait() })

			alice := labUser(t, "alice", ha, url)
			bob := labUser(t, "bob", hb, url)
			share := alice.start("share", "8080")
			ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
			conn := bob.start("connect", ticket, "--listen", "127.0.0.1:9000")
			if os.Getenv("KIN_NAT_DEBUG") != "" {
				time.Sleep(8 * time.Second)
				for _, r := range []string{strings.Replace(ha.NS, "-h", "-r", 1), strings.Replace(hb.NS, "-h", "-r", 1)} {
					out, _ := exec.Command("ip", "netns", "exec", r, "conntrack", "-L", "-p", "udp").CombinedOutput()
					t.Logf("%s:\n%s", r, out)
				}
			}
			m := conn.waitFor(`forwarding \S+ -> \S+ \((.*), connected in (\S+)\)$`)
			if !strings.HasPrefix(m[1], "direct") {
				t.Errorf("path %q, want direct for %s x %s", m[1], cell.a, cell.b)
			}
			t.Logf("%s x %s: %s, connected in %s", cell.a, cell.b, m[1], m[2])

			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			out, err := hb.Command(ctx, "env", "KIN_E2E_FETCH=http://127.0.0.1:9000/", self).Output()
			if err != nil || string(out) != hex.EncodeToString(want[:]) {
				t.Fatalf("payload through the NATs: %v %q", err, out)
			}
		})
	}
}
