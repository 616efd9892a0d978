package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"kin/internal/kintest"
)

// kinBin is the kin binary every test runs, built once by TestMain, from
// sources: go test's cache must see them (kintest.Sources), which the
// first user a test makes does.
var (
	kinBin    string
	sources   []string
	consulted sync.Once
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kin-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kinBin, err = kintest.Build(context.Background(), dir)
	if err == nil {
		sources, err = kintest.Sources(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// user is one person's kin (see kintest.User) in a test: a failure to run
// kin, or a wait that runs out, fails the test.
type user struct {
	*kintest.User
	t *testing.T
}

// newUser makes a user with a home of their own under the test's
// temporary directory and ICE on lo only; env adds or replaces settings.
func newUser(t *testing.T, name string, env ...string) *user {
	consulted.Do(func() { kintest.Consult(sources) })
	return &user{kintest.NewUser(kinBin, t.TempDir(), name, env...), t}
}

// run runs kin to completion and returns stdout, stderr and the exit code.
func (u *user) run(args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, errs, code, err := u.Run(ctx, args...)
	if err != nil {
		u.t.Fatal(err)
	}
	return out, errs, code
}

func (u *user) mustRun(args ...string) string {
	u.t.Helper()
	out, errs, code := u.run(args...)
	if code != 0 {
		u.t.Fatalf("kin %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
	return out
}

// start starts kin in the background; the test's end kills it.
func (u *user) start(args ...string) *proc {
	u.t.Helper()
	return startProc(u.t, u.Command(context.Background(), args...))
}

// proc is a program running in the background for a test.
type proc struct {
	*kintest.Proc
	t *testing.T
}

// startProc starts cmd (kin, or a daemon the test talks to).
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p, err := kintest.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return watch(t, p)
}

// watch kills p when the test ends, and shows its output if the test
// failed.
func watch(t *testing.T, p *kintest.Proc) *proc {
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %s:\n%s", p, p.Output())
		}
	})
	return &proc{p, t}
}

// waitFor waits until a line matches re and returns its submatches.
func (p *proc) waitFor(re string) []string {
	p.t.Helper()
	m, err := p.WaitFor(re, 45*time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

// exit waits for the process to end and returns its exit code.
func (p *proc) exit() int {
	p.t.Helper()
	code, err := p.Wait(20 * time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	return code
}

// startSignal runs `kin signal` on a free loopback port and returns its URL.
func startSignal(t *testing.T) (string, *proc) {
	t.Helper()
	u := newUser(t, "server")
	url, p, err := kintest.StartSignal(context.Background(), u.User, 45*time.Second, "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return url, watch(t, p)
}

// webServer serves a fixed page at / and n random bytes at /blob.
func webServer(t *testing.T, n int) (port int, page string, blobSum [32]byte) {
	blob := make([]byte, n)
	rand.Read(blob)
	page = "hello through kin\n"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/blob" {
			w.Write(blob)
			return
		}
		io.WriteString(w, page)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, page, sha256.Sum256(blob)
}

func get(t *testing.T, addr, path string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s%s: %v", addr, path, err)
	}
	return b
}
