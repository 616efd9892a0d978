package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"kin/keys"
	"kin/transport"
)

const peerID = keys.PeerID("abcdefghijklmnop")

// fakeAgent serves dials with an echo peer and records shares.
type fakeAgent struct {
	mu      sync.Mutex
	shares  map[int]bool
	stopped chan int
	dials   []string
}

func (f *fakeAgent) Hello() Reply {
	return Reply{ID: peerID, Signal: "ws://127.0.0.1:1", Instance: "inst1", Inbox: "/inbox"}
}

func (f *fakeAgent) Dial(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error) {
	f.mu.Lock()
	f.dials = append(f.dials, string(peer)+"/"+instance)
	f.mu.Unlock()
	if instance == "offline" {
		return nil, transport.Info{}, fmt.Errorf("dial: %w", transport.ErrPeerOffline)
	}
	a, b := net.Pipe()
	go func() { io.Copy(b, b); b.Close() }() // the peer echoes
	return a, transport.Info{Path: "direct (loopback)"}, nil
}

func (f *fakeAgent) Share(port int, udp bool, secret []byte) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shares[port] = true
	return func() {
		f.mu.Lock()
		delete(f.shares, port)
		f.mu.Unlock()
		f.stopped <- port
	}, nil
}

func (f *fakeAgent) sharing(port int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shares[port]
}

func startServer(t *testing.T, home string, opts ...func(*Server)) (*Server, *fakeAgent) {
	f := &fakeAgent{shares: map[int]bool{}, stopped: make(chan int, 1)}
	s, err := Listen(home, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(s) // before Serve reads the server
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, f
}

func TestControlSocket(t *testing.T) {
	home := t.TempDir()
	ctx := context.Background()
	if _, err := Hello(ctx, home); !errors.Is(err, ErrNoAgent) {
		t.Fatalf("no agent: %v", err)
	}
	s, f := startServer(t, home)
	for path, want := range map[string]os.FileMode{filepath.Dir(s.Path()): 0o700, s.Path(): 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, want %v (%v)", path, st.Mode().Perm(), want, err)
		}
	}
	if _, err := Listen(home, f, nil); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second agent: %v", err)
	}
	r, err := Hello(ctx, home)
	if err != nil || r.ID != peerID || r.Instance != "inst1" || r.Inbox != "/inbox" {
		t.Fatalf("hello: %+v %v", r, err)
	}

	// Dial: bytes go both ways through the agent's peer connection.
	c, r, err := Dial(ctx, home, peerID, "inst2")
	if err != nil || Info(r).Path != "direct (loopback)" {
		t.Fatalf("dial: %+v %v", r, err)
	}
	msg := bytes.Repeat([]byte("kin!"), 50000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the agent: %v", err)
	}
	c.Close()
	if _, _, err := Dial(ctx, home, peerID, "offline"); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline peer: %v", err)
	}

	// Share: served while the command stays connected.
	sc, _, err := Share(ctx, home, 3001, false, keys.NewSecret())
	if err != nil || !f.sharing(3001) {
		t.Fatalf("share: %v", err)
	}
	sc.Close()
	if port := <-f.stopped; port != 3001 || f.sharing(3001) {
		t.Fatalf("share of %d stopped", port)
	}
	// A request the agent does not understand gets a reason.
	if _, _, err := call(ctx, home, Request{Op: "steal"}); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("bad op: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Dir(SocketPath(home)), 0o755)
	ln, err := net.Listen("unix", SocketPath(home))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // a killed agent's socket file stays behind
	startServer(t, home)
	if _, err := Hello(context.Background(), home); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Dir(SocketPath(home))); st.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v", st.Mode().Perm())
	}
}

// The agent checks who connects: a process of another user is refused
// even when the socket's file modes would let it in.
func TestControlSocketRefusesAnotherUser(t *testing.T) {
	home := t.TempDir()
	_, f := startServer(t, home, func(s *Server) {
		s.owner = os.Getuid() + 1 // as if the agent belonged to someone else
	})
	if _, _, err := Dial(context.Background(), home, peerID, ""); err == nil || !strings.Contains(err.Error(), "another user") {
		t.Fatalf("dial as another user: %v", err)
	}
	if len(f.dials) != 0 {
		t.Fatalf("the agent dialed for another user: %v", f.dials)
	}
}

// As root the test runs a real process as nobody against a socket whose
// modes were opened up on purpose: SO_PEERCRED alone must stop it.
func TestControlSocketRefusesAnotherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	base, err := os.MkdirTemp("", "kin-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	home := filepath.Join(base, "home")
	s, f := startServer(t, home)
	for _, p := range []string{base, home, filepath.Dir(s.Path()), s.Path()} {
		os.Chmod(p, 0o777)
	}
	self, _ := os.Executable()
	bin := filepath.Join(base, "agent.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KIN_AGENT_TEST_DIAL="+home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "another user") {
		t.Fatalf("nobody's dial: %s", out)
	}
	if len(f.dials) != 0 {
		t.Fatalf("the agent dialed for nobody: %v", f.dials)
	}
}

func TestMain(m *testing.M) {
	if home := os.Getenv("KIN_AGENT_TEST_DIAL"); home != "" {
		_, _, err := Dial(context.Background(), home, peerID, "")
		fmt.Println("dial:", err)
		return
	}
	os.Exit(m.Run())
}

func TestParseRequest(t *testing.T) {
	good := []string{
		`{"v":1,"op":"hello"}`,
		`{"v":1,"op":"dial","peer":"abcdefghijklmnop"}`,
		`{"v":1,"op":"dial","peer":"abcdefghijklmnop","instance":"0a1b-2c"}`,
		`{"v":1,"op":"share","port":3001,"secret":"AAECAwQFBgcICQoLDA0ODw=="}`,
	}
	for _, g := range good {
		if _, err := ParseRequest([]byte(g)); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	bad := map[string]string{
		`{"v":2,"op":"hello"}`:                                              "version",
		`{"v":1,"op":"steal"}`:                                              "unknown operation",
		`{"v":1,"op":"dial","peer":"../../etc"}`:                            "bad peer",
		`{"v":1,"op":"dial","peer":"abcdefghijklmnop","instance":"A B"}`:    "bad instance",
		`{"v":1,"op":"share","port":0,"secret":"AAECAwQFBgcICQoLDA0ODw=="}`: "out of range",
		`{"v":1,"op":"share","port":80,"secret":"AAEC"}`:                    "secret",
		`{"v":1,"op":"hello"} {"v":1,"op":"hello"}`:                         "more than one",
		`not json`: "not a JSON",
		`{"v":1,"op":"hello","peer":` + strings.Repeat(`"x`, 3000) + `"}`: "too long",
	}
	for in, want := range bad {
		if _, err := ParseRequest([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.60s: %v, want %q", in, err, want)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"v":1,"op":"hello"}`))
	f.Add([]byte(`{"v":1,"op":"dial","peer":"abcdefghijklmnop","instance":"x1"}`))
	f.Add([]byte(`{"v":1,"op":"share","port":3001,"secret":"AAECAwQFBgcICQoLDA0ODw=="}`))
	f.Add([]byte(`{"v":1,"op":"lane","conn":"000102030405060708090a0b0c0d0e0f"}`))
	f.Add([]byte(`{"v":1,"op":"stream","conn":"000102030405060708090a0b0c0d0e0f","accept":true}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRequest(line)
		if err != nil {
			return
		}
		switch r.Op {
		case OpDial:
			if !r.Peer.Valid() || len(r.Instance) > keys.MaxInstance {
				t.Fatalf("accepted %+v", r)
			}
		case OpShare:
			if r.Port < 1 || r.Port > 65535 || len(r.Secret) != keys.SecretSize {
				t.Fatalf("accepted %+v", r)
			}
		case OpLane, OpStream:
			if len(r.Conn) != 2*dialedSize {
				t.Fatalf("accepted %+v", r)
			}
		case OpHello:
		default:
			t.Fatalf("accepted op %q", r.Op)
		}
	})
}
