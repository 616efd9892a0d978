package e2e

// End-to-end file transfers through the real binary: many small files, a
// large file killed halfway and resumed.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSendTenThousandSmallFiles(t *testing.T) {
	a := startAgent(t)
	dir := filepath.Join(t.TempDir(), "many")
	buf := make([]byte, 1024)
	for i := 0; i < 10_000; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%100))
		os.MkdirAll(sub, 0o755)
		rand.Read(buf)
		os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), buf, 0o644)
	}
	a.kid.mustRun("send", dir, "dad", "--quiet")
	n := 0
	filepath.WalkDir(filepath.Join(a.inbox, "many"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if n != 10_000 {
		t.Fatalf("%d of 10000 files arrived", n)
	}
}

// hashFile returns a file's SHA-256.
func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return [32]byte(h.Sum(nil))
}

var sizeRE = regexp.MustCompile(`sent 1 file, ([0-9.]+) ([kMG]?)B`)

func parseSize(num, unit string) float64 {
	f, _ := strconv.ParseFloat(num, 64)
	return f * map[string]float64{"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[unit]
}

func TestLargeFileKilledHalfwayResumes(t *testing.T) {
	a := startAgent(t)
	const size = 1 << 30
	src := filepath.Join(t.TempDir(), "big.bin")
	f, _ := os.Create(src)
	chunk := make([]byte, 4<<20)
	for written := 0; written < size; written += len(chunk) {
		rand.Read(chunk)
		f.Write(chunk)
	}
	f.Close()
	want := hashFile(t, src)

	// The first send dies (kill -9) when the receiver has about 40%.
	first := a.kid.start("send", src, "dad")
	partial := filepath.Join(a.inbox, ".kin-partial")
	deadline := time.Now().Add(3 * time.Minute)
	var have int64
	for have < size*4/10 {
		if time.Now().After(deadline) {
			t.Fatalf("receiver had %d bytes after 3 minutes", have)
		}
		time.Sleep(100 * time.Millisecond)
		have = 0
		matches, _ := filepath.Glob(filepath.Join(partial, "*.part"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil {
				have += st.Size()
			}
		}
	}
	first.Cmd.Process.Signal(syscall.SIGKILL)
	first.exit()
	if _, err := os.Stat(filepath.Join(a.inbox, "big.bin")); err == nil {
		t.Fatal("a partial file appeared under its final name")
	}
	// Let the receiver notice and settle what it has.
	time.Sleep(500 * time.Millisecond)
	matches, _ := filepath.Glob(filepath.Join(partial, "*.part"))
	if len(matches) != 1 {
		t.Fatalf("resumable state: %v", matches)
	}
	st, _ := os.Stat(matches[0])
	kept := st.Size()

	resend(t, a, src, size, kept)
	if hashFile(t, filepath.Join(a.inbox, "big.bin")) != want {
		t.Fatal("resumed 1 GiB file differs (SHA-256)")
	}
}

func TestSendRefusesWhatIsNotAFileAndSendsProcFilesWhole(t *testing.T) {
	a := startAgent(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{fifo: "named pipe", "/dev/zero": "device"} {
		_, errs, code := a.kid.run("send", p, "dad")
		if code == 0 || !strings.Contains(errs, want) || !strings.Contains(errs, "kin send -") {
			t.Errorf("kin send %s: exit %d, %q", p, code, errs)
		}
	}
	want, err := os.ReadFile("/proc/version")
	if err != nil {
		t.Skip("no /proc/version")
	}
	a.kid.mustRun("send", "/proc/version", "dad")
	if got, err := os.ReadFile(filepath.Join(a.inbox, "version")); err != nil || string(got) != string(want) {
		t.Errorf("received %q (%v), want %q", got, err, want)
	}
}

// A send whose stdin has more to come but never does ends on SIGTERM.
func TestSendEndsOnSignalWhileReadingStdin(t *testing.T) {
	a := startAgent(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := a.kid.Command(context.Background(), "send", "-", "dad", "--name", "stream", "--quiet")
	cmd.Stdin = r
	var errs strings.Builder
	cmd.Stderr = &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	// More than the sender buffers, so that the receiver sees data.
	w.Write(make([]byte, 1<<20))
	partial := filepath.Join(a.inbox, ".kin-partial")
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no partial data arrived: %s", errs.String())
		}
		m, _ := filepath.Glob(filepath.Join(partial, "*.part"))
		if len(m) == 1 {
			if st, err := os.Stat(m[0]); err == nil && st.Size() > 0 {
				break
			}
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("interrupted send exited 0")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kin send did not exit after SIGTERM while it read stdin")
	}
}

func TestUnwritableInboxIsReportedAtStartAndToTheSender(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (to mount a read-only tmpfs) and CI runs as root")
		}
		t.Skip("needs root to mount a read-only tmpfs")
	}
	mount := func(dir, opts string) {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v %s", err, out)
		}
	}
	ro := t.TempDir()
	mount(ro, "ro,size=1m")
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	a := startAgent(t)
	for _, args := range [][]string{{"receive", "--dir", ro}, {"up", "--dir", ro}} {
		_, errs, code := a.dad.run(args...)
		if code == 0 || !strings.Contains(errs, "read-only") || !strings.Contains(errs, "hint: ") {
			t.Errorf("kin %v: exit %d, %q", args, code, errs)
		}
	}
	// The agent's inbox becomes read-only while it runs.
	os.MkdirAll(a.inbox, 0o755)
	mount(a.inbox, "size=1m")
	t.Cleanup(func() { exec.Command("umount", a.inbox).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro", a.inbox).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, []byte("hello"), 0o644)
	_, errs, code := a.kid.run("send", f, "dad")
	if code == 0 || !strings.Contains(errs, "the receiver cannot write its inbox") || strings.Contains(errs, "send again") || strings.Contains(errs, "EOF") {
		t.Errorf("send to a read-only inbox: exit %d, %q", code, errs)
	}
}

// resend runs kid's kin send of src (size bytes) to dad again, after the
// receiver kept kept bytes of it, and checks that the summary says only
// the missing part moved; it returns what kin send printed.
func resend(t *testing.T, a *agentEnv, src string, size, kept int64) string {
	t.Helper()
	_, errs, code := a.kid.run("send", src, "dad")
	if code != 0 {
		t.Fatalf("resumed send: exit %d: %s", code, errs)
	}
	m := sizeRE.FindStringSubmatch(errs)
	if m == nil {
		t.Fatalf("no summary in %q", errs)
	}
	sent := parseSize(m[1], m[2])
	remaining := float64(size - kept)
	if sent > remaining*1.02+1e6 {
		t.Errorf("resumed run sent %.0f bytes; only %.0f were missing", sent, remaining)
	}
	if !strings.Contains(errs, "were already there") {
		t.Errorf("summary does not mention the resumed part: %q", errs)
	}
	return errs
}
