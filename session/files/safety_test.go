package files

// Data safety: symlinks that lead out through other links, modes, files
// that are not regular, stale partial files, an inbox that cannot be
// written (issue 13).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// linkEntry is a symlink entry as a sender puts it in an offer.
func linkEntry(p, target string) Entry {
	return Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Link: target}
}

// sendEntries sends entries (files get content "x") the way a hostile
// sender would, and returns what the receiver answered.
func sendEntries(t *testing.T, inbox string, entries ...Entry) ([]Result, error) {
	t.Helper()
	data := []byte("x")
	h := sha256.Sum256(data)
	return rawSend(t, inbox, func(w frameWriter) {
		w.writeJSON(frameOffer, offerOf(entries...))
		for i, e := range entries {
			w.write(frameBegin, encodeBegin(i, 0))
			if e.IsDir() || e.IsLink() {
				w.write(frameEnd, nil)
				continue
			}
			w.write(frameData, data)
			w.write(frameEnd, h[:])
		}
		w.write(frameDone, nil)
	})
}

// checkLinksInside fails if any symlink under inbox resolves outside the
// top-level directory it is in.
func checkLinksInside(t *testing.T, inbox string) {
	t.Helper()
	real, _ := filepath.EvalSymlinks(inbox)
	filepath.WalkDir(inbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel, _ := filepath.Rel(inbox, p)
		top := filepath.Join(real, strings.SplitN(filepath.ToSlash(rel), "/", 2)[0])
		dst, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil // dangling: leads nowhere
		}
		if dst != top && !strings.HasPrefix(dst, top+"/") {
			t.Errorf("symlink %s resolves to %s, outside %s", rel, dst, top)
		}
		return nil
	})
}

func TestSymlinksThroughLinksCannotLeaveWhatWasSent(t *testing.T) {
	inbox := t.TempDir()
	// Each target passes a check of its text alone; d and x make them
	// lead out: e to /etc/passwd's level, up2 and a to the inbox itself.
	res, err := sendEntries(t, inbox,
		Entry{Path: "t", Mode: fs.ModeDir | 0o755},
		Entry{Path: "t/f", Size: 1, Mode: 0o644},
		linkEntry("t/d", "."),
		linkEntry("t/e", "d/d/d/d/../../../../etc/passwd"),
		linkEntry("t/up2", "d/d/../.."),
		linkEntry("t/a", "x/.."), // harmless until x, a later link, appears
		linkEntry("t/x", "."),
		linkEntry("t/ok", "d/d/f"),
	)
	if err != nil {
		t.Fatalf("receiver: %v", err)
	}
	checkLinksInside(t, inbox)
	skipped := map[string]bool{}
	for _, r := range res {
		if r.Warning != "" {
			if !strings.Contains(r.Warning, "skipped symlink") || r.Error != "" || r.Name != "" {
				t.Errorf("result %+v", r)
			}
			skipped[strings.Fields(r.Warning)[2]] = true
		}
	}
	for _, name := range []string{"t/e", "t/up2", "t/a"} {
		if !skipped[name] {
			t.Errorf("%s not skipped with a warning: %+v", name, res)
		}
		if _, err := os.Lstat(filepath.Join(inbox, name)); err == nil {
			t.Errorf("%s was created", name)
		}
	}
	for _, name := range []string{"t/d", "t/x", "t/ok"} {
		if _, err := os.Lstat(filepath.Join(inbox, name)); err != nil {
			t.Errorf("%s, which stays inside, was not created: %v", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(inbox, "t/ok")); err != nil || string(b) != "x" {
		t.Errorf("t/ok: %q %v", b, err)
	}
}

func TestLinksFromAnEarlierTransferAreFollowed(t *testing.T) {
	inbox := t.TempDir()
	if _, err := sendEntries(t, inbox, Entry{Path: "t/sub", Mode: fs.ModeDir | 0o755}, linkEntry("t/d", ".")); err != nil {
		t.Fatal(err)
	}
	// t/d is a link now: a second transfer may not write through it, nor
	// make a link that leads out by way of it.
	res, err := sendEntries(t, inbox, Entry{Path: "t/d/f", Size: 1, Mode: 0o644}, linkEntry("t/up", "d/.."), Entry{Path: "t/d/s", Mode: fs.ModeDir | 0o755})
	if err == nil && (len(res) != 3 || res[0].Error == "" || res[1].Warning == "" || res[2].Error == "") {
		t.Errorf("results %+v", res)
	}
	for _, name := range []string{"t/f", "t/s", "t/up"} {
		if _, err := os.Lstat(filepath.Join(inbox, name)); err == nil {
			t.Errorf("%s was created", name)
		}
	}
	checkLinksInside(t, inbox)
}

func TestSenderSkipsLinksThatLeadOutThroughLinks(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	tree := filepath.Join(src, "t")
	writeRandom(t, filepath.Join(tree, "f"), 10)
	os.Symlink(".", filepath.Join(tree, "d"))
	os.Symlink("d/d/../..", filepath.Join(tree, "up2"))
	os.Symlink("d/f", filepath.Join(tree, "ok"))
	plan := mustScan(t, tree)
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "up2") {
		t.Errorf("warnings %q", plan.Warnings)
	}
	if _, _, serr, rerr := transfer(t, plan, inbox, nil); serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if _, err := os.Lstat(filepath.Join(inbox, "t/up2")); err == nil {
		t.Error("up2 was sent")
	}
	if target, err := os.Readlink(filepath.Join(inbox, "t/ok")); err != nil || target != "d/f" {
		t.Errorf("t/ok: %q %v", target, err)
	}
	checkLinksInside(t, inbox)
}

func TestModesFollowTheReceiversUmask(t *testing.T) {
	src := t.TempDir()
	tree := filepath.Join(src, "t")
	writeRandom(t, filepath.Join(tree, "f"), 10)
	os.Chmod(filepath.Join(tree, "f"), 0o666)
	os.Chmod(tree, 0o777)
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, c := range []struct {
		umask     int
		dir, file fs.FileMode
		what      string
	}{
		{0o022, 0o755, 0o644, "umask 022"},
		{0o000, 0o775, 0o664, "umask 0 (still not world-writable)"},
	} {
		syscall.Umask(c.umask)
		inbox := t.TempDir()
		if _, _, serr, rerr := transfer(t, mustScan(t, tree), inbox, nil); serr != nil || rerr != nil {
			t.Fatal(serr, rerr)
		}
		syscall.Umask(0o022)
		if st, err := os.Stat(filepath.Join(inbox, "t")); err != nil || st.Mode().Perm() != c.dir || st.Mode()&(fs.ModeSticky|fs.ModeSetgid) != 0 {
			t.Errorf("%s: directory %v %v, want %v", c.what, st.Mode(), err, c.dir)
		}
		if st, err := os.Stat(filepath.Join(inbox, "t/f")); err != nil || st.Mode() != c.file {
			t.Errorf("%s: file %v %v, want %v", c.what, st.Mode(), err, c.file)
		}
	}
	// A hostile offer with setuid, setgid or sticky bits is refused.
	for _, m := range []fs.FileMode{fs.ModeSetuid, fs.ModeSetgid, fs.ModeSticky} {
		if _, err := sendEntries(t, t.TempDir(), Entry{Path: "f", Size: 1, Mode: m | 0o755}); err == nil {
			t.Errorf("mode %v accepted", m)
		}
	}
}

// scanSoon runs Scan, failing (instead of hanging the test) if it blocks.
func scanSoon(t *testing.T, p string) (*Plan, error) {
	t.Helper()
	type out struct {
		p   *Plan
		err error
	}
	c := make(chan out, 1)
	go func() { p, err := Scan(p); c <- out{p, err} }()
	select {
	case o := <-c:
		return o.p, o.err
	case <-time.After(20 * time.Second):
		t.Fatalf("Scan(%s) blocked", p)
		return nil, nil
	}
}

func TestNonRegularFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for p, kind := range map[string]string{fifo: "named pipe", sock: "socket", "/dev/zero": "device", "/dev/null": "device"} {
		_, err := scanSoon(t, p)
		if err == nil || !strings.Contains(err.Error(), kind) || !strings.Contains(err.Error(), "kin send -") {
			t.Errorf("%s: %v", p, err)
		}
	}
	// Inside a directory they are skipped with a warning.
	writeRandom(t, filepath.Join(dir, "f"), 10)
	plan, err := scanSoon(t, dir)
	if err != nil || len(plan.Offer.Entries) != 2 || len(plan.Warnings) != 2 {
		t.Fatalf("%v: %+v %q", err, plan.Offer.Entries, plan.Warnings)
	}
}

func TestFileWhoseSizeReadsZeroIsSentWhole(t *testing.T) {
	want, err := os.ReadFile("/proc/version")
	if err != nil || len(want) == 0 {
		t.Skip("no /proc/version")
	}
	inbox := t.TempDir()
	st, res, serr, rerr := transfer(t, mustScan(t, "/proc/version"), inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	got, err := os.ReadFile(filepath.Join(inbox, res[0].Name))
	if err != nil || !bytes.Equal(got, want) || st.Sent != int64(len(want)) {
		t.Fatalf("received %q (%v), sent %d; want %q", got, err, st.Sent, want)
	}
}

func TestResendingATreeWithAnEmptyFile(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	tree := filepath.Join(src, "t")
	writeRandom(t, filepath.Join(tree, "f"), 10)
	os.WriteFile(filepath.Join(tree, "empty"), nil, 0o644)
	for i := 0; i < 2; i++ {
		if _, _, serr, rerr := transfer(t, mustScan(t, tree), inbox, nil); serr != nil || rerr != nil {
			t.Fatalf("send %d: %v %v", i+1, serr, rerr)
		}
	}
	if _, err := os.Stat(filepath.Join(inbox, "t", "empty (1)")); err == nil {
		t.Error("the empty file was received twice")
	}
}

// partialsIn lists the partial files of an inbox.
func partialsIn(inbox string) []string {
	m, _ := filepath.Glob(filepath.Join(inbox, partialDir, "*.part"))
	return m
}

func TestStalePartialsAreRemoved(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(inbox, partialDir), 0o700)
	old := filepath.Join(inbox, partialDir, "0123.part")
	fresh := filepath.Join(inbox, partialDir, "4567.part")
	os.WriteFile(old, make([]byte, 1000), 0o600)
	os.WriteFile(fresh, make([]byte, 10), 0o600)
	long := time.Now().Add(-PartialMaxAge - time.Hour)
	os.Chtimes(old, long, long)
	in := &Inbox{Dir: inbox}
	if n, b, err := in.Partials(); n != 2 || b != 1010 || err != nil {
		t.Fatalf("Partials: %d %d %v", n, b, err)
	}
	if err := in.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err == nil {
		t.Error("a partial file older than PartialMaxAge was kept")
	}
	if n, b, _ := in.Partials(); n != 1 || b != 10 {
		t.Errorf("Partials after Check: %d %d", n, b)
	}

	// An old partial file that a sender resumes is kept and used.
	f := filepath.Join(src, "big.bin")
	data := writeRandom(t, f, 4<<20)
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		_, err := in.Receive(ctx, b, "peer-key", nil, nil)
		done <- err
	}()
	Send(ctx, &cutConn{Conn: a, left: 1 << 20}, mustScan(t, f), nil)
	<-done
	for _, p := range partialsIn(inbox) {
		if p != fresh {
			os.Chtimes(p, long, long)
		}
	}
	st, _, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if serr != nil || rerr != nil || st.Resumed == 0 {
		t.Fatalf("resume of an old partial: resumed %d, %v %v", st.Resumed, serr, rerr)
	}
	if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(data) {
		t.Fatal("resumed file differs")
	}
}

// mountTmpfs mounts a tmpfs at dir with options, or skips without root.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root (to mount a tmpfs) and CI runs as root")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
}

func TestDiskFullMakesRoomFromStalePartials(t *testing.T) {
	inbox, src := t.TempDir(), t.TempDir()
	mountTmpfs(t, inbox, "size=1m")
	big := filepath.Join(src, "big")
	writeRandom(t, big, 4<<20)
	_, _, serr, _ := transfer(t, mustScan(t, big), inbox, nil)
	if !errors.Is(serr, ErrDiskFull) || !strings.Contains(serr.Error(), "partial data kept") {
		t.Fatalf("sender: %v", serr)
	}
	if n, b, _ := (&Inbox{Dir: inbox}).Partials(); n != 1 || b == 0 {
		t.Fatalf("after disk full: %d partial files, %d bytes", n, b)
	}
	small := filepath.Join(src, "small")
	os.WriteFile(small, []byte("abc"), 0o644)
	if _, _, serr, rerr := transfer(t, mustScan(t, small), inbox, nil); serr != nil || rerr != nil {
		t.Fatalf("a 3-byte file after disk full: %v %v", serr, rerr)
	}
	if b, _ := os.ReadFile(filepath.Join(inbox, "small")); string(b) != "abc" {
		t.Errorf("small: %q", b)
	}
	if p := partialsIn(inbox); len(p) != 0 {
		t.Errorf("stale partial kept: %v", p)
	}
}

func TestUnwritableInbox(t *testing.T) {
	inbox, src := t.TempDir(), t.TempDir()
	mountTmpfs(t, inbox, "ro,size=1m")
	in := &Inbox{Dir: inbox}
	if err := in.Check(); !errors.Is(err, ErrInboxUnwritable) || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), inbox) {
		t.Errorf("Check: %v", err)
	}
	f := filepath.Join(src, "f")
	writeRandom(t, f, 100)
	_, _, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if !errors.Is(serr, ErrInboxUnwritable) || !strings.Contains(serr.Error(), "cannot write its inbox") || strings.Contains(serr.Error(), inbox) {
		t.Errorf("sender: %v", serr)
	}
	if rerr == nil || strings.Contains(rerr.Error(), "kept") {
		t.Errorf("receiver: %v", rerr)
	}
	// A subdirectory that does not exist yet, under a read-only one.
	if err := (&Inbox{Dir: filepath.Join(inbox, "sub")}).Check(); !errors.Is(err, ErrInboxUnwritable) {
		t.Errorf("Check of a missing inbox on a read-only mount: %v", err)
	}
}

// FuzzConfineLinks: whatever links a peer sends, those confineLinks lets
// through, created for real, resolve inside their top-level directory.
func FuzzConfineLinks(f *testing.F) {
	f.Add("t/d\x00.\nt/e\x00d/d/d/d/../../../../etc/passwd\nt/up2\x00d/d/../..\nt/ok\x00d/f")
	f.Add("t/a\x00x/..\nt/x\x00.")
	f.Add("t/a/b\x00../c\nt/c\x00a/b/../../a")
	f.Fuzz(func(t *testing.T, spec string) {
		var links []linkReq
		seen := map[string]bool{}
		for _, line := range strings.Split(spec, "\n") {
			name, target, ok := strings.Cut(line, "\x00")
			if !ok || len(links) == 8 {
				continue
			}
			if _, err := CleanPath(name); err != nil || seen[name] || !strings.Contains(name, "/") || checkLink(name, target) != nil {
				continue
			}
			seen[name] = true
			links = append(links, linkReq{name, target})
		}
		for n := range seen { // a link may not sit under another one
			for m := range seen {
				if strings.HasPrefix(n, m+"/") {
					return
				}
			}
		}
		// The directories above the links exist (the receiver makes them
		// first), nothing else.
		dirs := map[string]bool{}
		for n := range seen {
			for d := path.Dir(n); d != "."; d = path.Dir(d) {
				dirs[d] = true
			}
		}
		refused := confineLinks(links, func(p string) (string, bool, bool) { return "", false, dirs[p] })
		root := t.TempDir()
		base := filepath.Join(root, "in")
		for i, l := range links {
			if _, no := refused[i]; no {
				continue
			}
			p := filepath.Join(base, filepath.FromSlash(l.Name))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(l.Target, p); err != nil {
				return
			}
		}
		checkLinksInside(t, base)
	})
}

// FuzzSenderInput: whatever a receiver answers, Send ends without panic.
func FuzzSenderInput(f *testing.F) {
	var seed bytes.Buffer
	w := frameWriter{bufio.NewWriter(&seed)}
	w.writeJSON(frameAccept, acceptMsg{})
	w.writeJSON(frameResult, Result{Index: 0, Error: "disk", Code: codeDiskFull})
	w.w.Flush()
	f.Add(seed.Bytes())
	seed.Reset()
	w.writeJSON(frameRefuse, refusal{Code: codeInboxUnwritable, Reason: "read-only file system"})
	w.w.Flush()
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		plan, _ := StreamPlan("s", bytes.NewReader([]byte("abc")))
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		Send(ctx, rw, plan, nil)
	})
}
