package e2e

// kin through real kernel NATs: the network-namespace lab.

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kin/internal/netlab"
	"kin/internal/netns"
)

const natPayload = 4 << 20

// payload is the pseudo-random bytes every cell moves.
func payload() []byte {
	b := make([]byte, natPayload)
	rand.NewChaCha8([32]byte{'k', 'i', 'n'}).Read(b)
	return b
}

// serveIn serves body over HTTP at addr inside namespace ns, from this
// process, until the test ends.
func serveIn(t *testing.T, ns, addr string, body []byte) {
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fetchIn GETs url from inside namespace ns and returns the SHA-256 of
// what came back.
func fetchIn(ctx context.Context, ns, url string) (sum [32]byte, err error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = netns.Do(ns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return sum, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return sum, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func labUser(t *testing.T, name string, h *netlab.Host, signal string) *user {
	// ICE uses the namespace's own interfaces here, not lo.
	u := newUser(t, name, "KIN_SIGNAL="+signal, "KIN_ICE_INTERFACES=", "KIN_VERBOSE=1") // verbose: a failing cell shows why
	u.NS = h.NS
	return u
}

// relayed says whether the lab's NATs leave two peers no direct path:
// a peer without UDP always needs the relay (over TCP); a symmetric NAT
// gets through only to a peer that accepts from anywhere.
func relayed(a, b netlab.NATKind) bool {
	if a == netlab.UDPBlocked || b == netlab.UDPBlocked {
		return true
	}
	if b == netlab.Symmetric {
		a, b = b, a
	}
	return a == netlab.Symmetric && b != netlab.Public && b != netlab.FullCone
}

// TestNATMatrix connects every pair of NAT kinds through the real binary
// with kin signal's built-in STUN/TURN, and moves a payload checked by
// SHA-256: directly where the NATs allow it, relayed where they don't.
func TestNATMatrix(t *testing.T) { natMatrix(t, false) }

// TestNATMatrixCoturn is the same matrix with Debian's coturn as the
// STUN/TURN server, sharing kin signal's secret (use-auth-secret).
func TestNATMatrixCoturn(t *testing.T) {
	if _, err := exec.LookPath("turnserver"); err != nil {
		if os.Getenv("KIN_NETLAB_REQUIRED") != "" {
			t.Fatal("coturn must be installed here (Debian package coturn)")
		}
		t.Skip("coturn interop skipped: needs turnserver (Debian package coturn)")
	}
	natMatrix(t, true)
}

func natMatrix(t *testing.T, coturn bool) {
	body := payload()
	want := sha256.Sum256(body)
	slots := make(chan struct{}, 2) // two cells at a time: under CPU starvation ICE timers misfire
	for i, a := range netlab.Kinds {
		for _, b := range netlab.Kinds[i:] {
			t.Run(string(a)+"-"+string(b), func(t *testing.T) {
				t.Parallel()
				slots <- struct{}{}
				defer func() { <-slots }()
				natCell(t, body, want, a, b, coturn)
			})
		}
	}
}

func natCell(t *testing.T, body []byte, want [32]byte, a, b netlab.NATKind, coturn bool) {
	lab := netlab.New(t)
	inet := lab.Internet()
	url := "ws://203.0.113.1:7000"
	server := labUser(t, "server", inet, url)
	args := []string{"signal", "--listen", "203.0.113.1:7000"}
	if coturn {
		const secret = "lab-secret"
		dir := t.TempDir()
		turn := inet.Command(context.Background(), "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls",
			"--listening-ip=203.0.113.1", "--listening-port=3478", "--relay-ip=203.0.113.1",
			"--use-auth-secret", "--static-auth-secret="+secret, "--realm=kin", "--fingerprint",
			"--pidfile="+filepath.Join(dir, "pid"), "--log-file="+filepath.Join(dir, "log"), "--simple-log", "--verbose")
		out := &strings.Builder{}
		turn.Stdout, turn.Stderr = out, out
		if err := turn.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			turn.Process.Kill()
			turn.Wait()
			if t.Failed() {
				log, _ := os.ReadFile(filepath.Join(dir, "log"))
				t.Logf("coturn:\n%s%s", out, log)
			}
		})
		args = append(args, "--turn-secret", secret,
			"--ice-server", "stun:203.0.113.1:3478",
			"--ice-server", "turn:203.0.113.1:3478?transport=udp",
			"--ice-server", "turn:203.0.113.1:3478?transport=tcp")
	} else {
		args = append(args, "--turn", "203.0.113.1:3478")
	}
	sig := server.start(args...)
	sig.waitFor(`signaling server on`)
	ha, hb := lab.AddPeer(a), lab.AddPeer(b)

	serveIn(t, ha.NS, "127.0.0.1:8080", body) // alice's web server

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
	path, wantRelay := m[1], relayed(a, b)
	switch {
	case wantRelay && !strings.HasPrefix(path, "relayed"):
		t.Errorf("path %q, want relayed for %s x %s", path, a, b)
	case !wantRelay && !strings.HasPrefix(path, "direct"):
		t.Errorf("path %q, want direct for %s x %s", path, a, b)
	}
	t.Logf("%s x %s: %s, connected in %s", a, b, path, m[2])
	if os.Getenv("KIN_NAT_DEBUG") != "" {
		t.Log(conn.waitFor(`msg="peer connection" .*`)[0])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if sum, err := fetchIn(ctx, hb.NS, "http://127.0.0.1:9000/"); err != nil || sum != want {
		t.Fatalf("payload through the NATs: %v (SHA-256 %x, want %x)", err, sum, want)
	}
}

// TestDoctorNamesTheNAT runs kin doctor behind each lab NAT: it must name
// the NAT each really is and find the relay (over TCP when UDP is
// blocked); and `kin doctor FRIEND` lists the pairs ICE tried.
func TestDoctorNamesTheNAT(t *testing.T) {
	lab := netlab.New(t)
	inet := lab.Internet()
	url := "ws://203.0.113.1:7000"
	server := labUser(t, "server", inet, url)
	server.start("signal", "--listen", "203.0.113.1:7000", "--turn", "203.0.113.1:3478").waitFor(`signaling server on`)
	want := map[netlab.NATKind]string{
		netlab.Public:     "none (public address)",
		netlab.FullCone:   "full cone",
		netlab.Restricted: "port-restricted cone",
		netlab.Symmetric:  "symmetric",
		netlab.UDPBlocked: "UDP blocked",
		netlab.DoubleNAT:  "port-restricted cone",
	}
	hosts := map[netlab.NATKind]*netlab.Host{}
	for _, kind := range netlab.Kinds {
		hosts[kind] = lab.AddPeer(kind)
		u := labUser(t, string(kind), hosts[kind], url)
		if st := u.mustRun("status"); !strings.Contains(st, "network:   NAT "+want[kind]+":") {
			t.Errorf("%s NAT: status said\n%s", kind, st)
		}
		out := u.mustRun("doctor")
		t.Logf("behind %s: kin doctor\n%s", kind, out)
		if !strings.Contains(out, "\nnat: "+want[kind]+"\n") {
			t.Errorf("%s NAT: doctor said\n%s", kind, out)
		}
		if !strings.Contains(out, "?transport=tcp: relay 203.0.113.1:") {
			t.Errorf("%s NAT: no TURN relay over TCP:\n%s", kind, out)
		}
		if kind == netlab.UDPBlocked {
			if !strings.Contains(out, "?transport=udp: FAILED") {
				t.Errorf("UDP-blocked: TURN over UDP should fail:\n%s", out)
			}
		} else if !strings.Contains(out, "?transport=udp: relay 203.0.113.1:") {
			t.Errorf("%s NAT: no TURN relay over UDP:\n%s", kind, out)
		}
	}

	// kin doctor FRIEND: from behind the symmetric NAT to a restricted
	// friend's agent, which needs the relay.
	dad := labUser(t, "dad", hosts[netlab.Restricted], url)
	kid := labUser(t, "kid", hosts[netlab.Symmetric], url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")))
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	agent := dad.start("up")
	agent.waitFor(`kin is up`)
	out := kid.mustRun("doctor", "dad")
	t.Logf("kin doctor dad\n%s", out)
	for _, w := range []string{"peer: dad: relayed (TURN)", "\npair:* ", "ssh: dad's key checked"} {
		if !strings.Contains(out, w) {
			t.Errorf("doctor dad: no %q in\n%s", w, out)
		}
	}
}
