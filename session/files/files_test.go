package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func writeRandom(t testing.TB, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return b
}

// transfer runs Send and Receive into inbox over a pipe and returns both
// outcomes.
func transfer(t testing.TB, plan *Plan, inbox string, decide func(Offer) error) (Stats, []Result, error, error) {
	t.Helper()
	return transferWith(t, plan, &Inbox{Dir: inbox}, decide)
}

// transferWith runs Send and in.Receive over a pipe.
func transferWith(t testing.TB, plan *Plan, in *Inbox, decide func(Offer) error) (Stats, []Result, error, error) {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res []Result
	var rerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer b.Close()
		res, rerr = in.Receive(ctx, b, "peer-key", decide, nil)
	}()
	st, serr := Send(ctx, a, plan, nil)
	a.Close()
	wg.Wait()
	return st, res, serr, rerr
}

func mustScan(t testing.TB, paths ...string) *Plan {
	t.Helper()
	p, err := Scan(paths...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestSendTreeKeepsStructureModesTimesAndInsideLinks(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	tree := filepath.Join(src, "photos")
	a := writeRandom(t, filepath.Join(tree, "2026", "a.jpg"), 300_000)
	writeRandom(t, filepath.Join(tree, "b.txt"), 10)
	os.WriteFile(filepath.Join(tree, "empty"), nil, 0o600)
	os.Chmod(filepath.Join(tree, "b.txt"), 0o755)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(tree, "b.txt"), mtime, mtime)
	os.Symlink("2026/a.jpg", filepath.Join(tree, "latest"))
	os.Symlink("/etc/passwd", filepath.Join(tree, "outside"))
	plan := mustScan(t, tree)
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "outside") {
		t.Errorf("warnings %q", plan.Warnings)
	}
	st, _, serr, rerr := transfer(t, plan, inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatalf("send %v, receive %v", serr, rerr)
	}
	if st.Sent != 300_010 {
		t.Errorf("sent %d bytes", st.Sent)
	}
	if got := sum(t, filepath.Join(inbox, "photos", "2026", "a.jpg")); got != sha256.Sum256(a) {
		t.Error("a.jpg differs")
	}
	fi, err := os.Stat(filepath.Join(inbox, "photos", "b.txt"))
	if err != nil || fi.Mode().Perm() != 0o755 || !fi.ModTime().Equal(mtime) {
		t.Errorf("b.txt: %v %v %v", err, fi.Mode(), fi.ModTime())
	}
	if target, err := os.Readlink(filepath.Join(inbox, "photos", "latest")); err != nil || target != "2026/a.jpg" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(inbox, "photos", "outside")); err == nil {
		t.Error("a symlink pointing outside was sent")
	}
	if _, err := os.Stat(filepath.Join(inbox, "photos", "empty")); err != nil {
		t.Error("empty file missing")
	}
}

func TestNeverOverwrites(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	f := filepath.Join(src, "report.pdf")
	writeRandom(t, f, 1000)
	os.WriteFile(filepath.Join(inbox, "report.pdf"), []byte("mine"), 0o644)
	os.WriteFile(filepath.Join(inbox, "report (1).pdf"), []byte("mine too"), 0o644)
	_, res, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if res[0].Name != "report (2).pdf" {
		t.Errorf("landed as %q", res[0].Name)
	}
	if b, _ := os.ReadFile(filepath.Join(inbox, "report.pdf")); string(b) != "mine" {
		t.Error("existing file overwritten")
	}
	// Sending the same file again does not duplicate it: it is already there.
	st, res, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if serr != nil || rerr != nil || st.Sent != 0 || res[0].Name != "report (2).pdf" {
		t.Errorf("resend: sent %d, %+v, %v %v", st.Sent, res, serr, rerr)
	}
}

func TestManySmallFilesArePipelined(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	dir := filepath.Join(src, "many")
	for i := 0; i < 10_000; i++ {
		writeRandom(t, filepath.Join(dir, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d", i)), 1024)
	}
	// Count round trips: the receiver's answers must not gate the sender.
	// A pipe that delays every receiver->sender write by 1 ms would make
	// a round trip per file take over 10 s; pipelined it takes far less.
	a, b := net.Pipe()
	slow := &delayedWriter{Conn: b, delay: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var rerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer b.Close()
		_, rerr = (&Inbox{Dir: inbox}).Receive(ctx, slow, "k", nil, nil)
	}()
	st, err := Send(ctx, a, mustScan(t, dir), nil)
	a.Close()
	wg.Wait()
	if err != nil || rerr != nil {
		t.Fatal(err, rerr)
	}
	if st.Sent != 10_000*1024 {
		t.Errorf("sent %d", st.Sent)
	}
	if slow.writes.Load() > 2_000 {
		t.Errorf("receiver answered in %d separate writes for 10,000 files: not batched", slow.writes.Load())
	}
	n := 0
	filepath.WalkDir(filepath.Join(inbox, "many"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if n != 10_000 {
		t.Errorf("%d files arrived", n)
	}
}

type delayedWriter struct {
	net.Conn
	delay  time.Duration
	writes atomicInt
}

type atomicInt struct {
	mu sync.Mutex
	n  int
}

func (a *atomicInt) Add() { a.mu.Lock(); a.n++; a.mu.Unlock() }
func (a *atomicInt) Load() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (d *delayedWriter) Write(p []byte) (int, error) {
	d.writes.Add()
	time.Sleep(d.delay)
	return d.Conn.Write(p)
}

// cutConn passes through the first limit bytes written, then breaks.
type cutConn struct {
	net.Conn
	left  int
	cut   func()        // called when it breaks
	stall chan struct{} // if set, the link breaks only once it is closed: a sender gone silent first
	// once, if set, is shared by links of which only the first to reach
	// its limit breaks; the others pass everything.
	once *atomic.Bool
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.left <= 0 {
		c.Conn.Close()
		return 0, errors.New("link down")
	}
	if len(p) > c.left && c.once != nil && !c.once.CompareAndSwap(false, true) {
		c.left = math.MaxInt // another link broke: this one stays up
	}
	if len(p) > c.left {
		n, _ := c.Conn.Write(p[:c.left])
		c.left = 0
		if c.stall != nil {
			<-c.stall
		}
		c.Conn.Close()
		if c.cut != nil {
			c.cut()
		}
		return n, errors.New("link down")
	}
	c.left -= len(p)
	return c.Conn.Write(p)
}

func TestResumeSendsOnlyWhatIsMissing(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	f := filepath.Join(src, "big.bin")
	data := writeRandom(t, f, 8<<20)
	plan := mustScan(t, f)

	// First attempt: the link breaks after about 3 MiB.
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		_, err := (&Inbox{Dir: inbox}).Receive(ctx, b, "peer-key", nil, nil)
		done <- err
	}()
	if _, err := Send(ctx, &cutConn{Conn: a, left: 3 << 20}, plan, nil); err == nil {
		t.Fatal("send over a broken link succeeded")
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "resumes") {
		t.Fatalf("receiver: %v", err)
	}
	if _, err := os.Stat(filepath.Join(inbox, "big.bin")); err == nil {
		t.Fatal("a partial file appeared under its final name")
	}

	st, res, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	remaining := int64(8<<20 - 3<<20)
	if st.Sent > remaining+256<<10 || st.Resumed < 3<<20-256<<10 {
		t.Errorf("resume sent %d bytes (resumed %d); %d were missing", st.Sent, st.Resumed, remaining)
	}
	if res[0].Name != "big.bin" || sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(data) {
		t.Fatal("resumed file differs")
	}
}

func TestStreamFromReader(t *testing.T) {
	inbox := t.TempDir()
	data := make([]byte, 1<<20+17)
	rand.Read(data)
	plan, err := StreamPlan("dir.tar", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_, _, serr, rerr := transfer(t, plan, inbox, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if sum(t, filepath.Join(inbox, "dir.tar")) != sha256.Sum256(data) {
		t.Fatal("stream differs")
	}
}

func TestDecideCanRefuse(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	writeRandom(t, filepath.Join(src, "x"), 10)
	_, _, serr, rerr := transfer(t, mustScan(t, filepath.Join(src, "x")), inbox, func(Offer) error { return errors.New("no files from you") })
	if !errors.Is(serr, ErrRejected) || !strings.Contains(serr.Error(), "no files from you") || rerr == nil {
		t.Fatalf("send %v, receive %v", serr, rerr)
	}
	if entries, _ := os.ReadDir(inbox); len(entries) != 0 {
		t.Fatalf("refused transfer wrote %v", entries)
	}
}

func TestScanErrorsBeforeSending(t *testing.T) {
	if _, err := Scan(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "cannot send") {
		t.Fatalf("missing file: %v", err)
	}
	if os.Geteuid() != 0 {
		f := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(f, nil, 0)
		if _, err := Scan(f); err == nil {
			t.Fatal("unreadable file scanned")
		}
	}
}

// rawSend writes frames as a lying or malicious sender would and returns
// what the receiver said.
func rawSend(t *testing.T, inbox string, frames func(w frameWriter)) ([]Result, error) {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var res []Result
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer b.Close()
		res, rerr = (&Inbox{Dir: inbox}).Receive(ctx, b, "evil", nil, nil)
	}()
	go io.Copy(io.Discard, a)
	w := frameWriter{bufio.NewWriter(a)}
	frames(w)
	w.w.Flush()
	select { // the frames end with Done or with something the receiver must refuse
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("receiver still waiting after the frames")
	}
	a.Close()
	<-done
	return res, rerr
}

func offerOf(entries ...Entry) Offer { return Offer{V: 1, Entries: entries} }

func TestHostilePathsAreRefused(t *testing.T) {
	// Refused on every OS; what only Windows cannot take is in
	// TestWindowsNamesOnlyWhereTheyCannotBe.
	for _, p := range []string{"../evil", "a/../../evil", "/etc/passwd", "a\x00b", `C:\evil`, "a\\b", "x/./y", "a//b", "", ".kin-partial/x", "a\nb"} {
		inbox := t.TempDir()
		_, err := rawSend(t, inbox, func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: p, Size: 1, Mode: 0o644}))
		})
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("path %q: %v", p, err)
		}
		if entries, _ := os.ReadDir(inbox); len(entries) != 0 {
			t.Errorf("path %q: inbox has %v", p, entries)
		}
	}
	for _, link := range [][2]string{{"a/l", "../../x"}, {"a/l", "/etc"}, {"a/l", "../b"}} {
		_, err := rawSend(t, t.TempDir(), func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: link[0], Mode: fs.ModeSymlink | 0o777, Link: link[1]}))
		})
		if err == nil {
			t.Errorf("symlink %v accepted", link)
		}
	}
}

func TestSymlinkInInboxCannotLeadOutside(t *testing.T) {
	inbox, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(inbox, "evil"))
	data := []byte("x")
	h := sha256.Sum256(data)
	res, err := rawSend(t, inbox, func(w frameWriter) {
		w.writeJSON(frameOffer, offerOf(Entry{Path: "evil/x", Size: 1, Mode: 0o644}))
		w.write(frameBegin, encodeBegin(0, 0))
		w.write(frameData, data)
		w.write(frameEnd, h[:])
		w.write(frameDone, nil)
	})
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote outside the inbox: %v", entries)
	}
	if err == nil && (len(res) == 0 || res[0].Error == "") {
		t.Fatalf("no error: %+v", res)
	}
}

func TestLyingSender(t *testing.T) {
	data := []byte("0123456789")
	good := sha256.Sum256(data)
	cases := map[string]func(w frameWriter){
		"more": func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: "f", Size: 5, Mode: 0o644}))
			w.write(frameBegin, encodeBegin(0, 0))
			w.write(frameData, data)
		},
		"less": func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: "f", Size: 20, Mode: 0o644}))
			w.write(frameBegin, encodeBegin(0, 0))
			w.write(frameData, data)
			w.write(frameEnd, good[:])
			w.write(frameDone, nil)
		},
		"checksum": func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: "f", Size: 10, Mode: 0o644}))
			w.write(frameBegin, encodeBegin(0, 0))
			w.write(frameData, data)
			w.write(frameEnd, make([]byte, 32))
			w.write(frameDone, nil)
		},
		"wrong resume offset": func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: "f", Size: 10, Mode: 0o644}))
			w.write(frameBegin, encodeBegin(0, 5))
		},
		"data outside a file": func(w frameWriter) {
			w.writeJSON(frameOffer, offerOf(Entry{Path: "f", Size: 10, Mode: 0o644}))
			w.write(frameData, data)
		},
	}
	for name, frames := range cases {
		inbox := t.TempDir()
		_, err := rawSend(t, inbox, frames)
		if err == nil {
			t.Errorf("%s: receiver accepted", name)
		}
		if _, err := os.Stat(filepath.Join(inbox, "f")); err == nil {
			t.Errorf("%s: a final file exists", name)
		}
	}
	// "less" keeps the partial data as resumable state.
	inbox := t.TempDir()
	rawSend(t, inbox, cases["less"])
	parts, _ := filepath.Glob(filepath.Join(inbox, partialDir, "*.part"))
	if len(parts) != 1 {
		t.Errorf("partial state after a short file: %v", parts)
	}
}

func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("disk-full test needs root (to mount a small tmpfs) and CI runs as root")
		}
		t.Skip("needs root to mount a small tmpfs")
	}
	inbox := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", inbox).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", inbox).Run()
	src := t.TempDir()
	f := filepath.Join(src, "big")
	writeRandom(t, f, 4<<20)
	_, _, serr, rerr := transfer(t, mustScan(t, f), inbox, nil)
	if serr == nil || !strings.Contains(serr.Error(), "disk is full") {
		t.Errorf("sender: %v", serr)
	}
	if rerr == nil || !strings.Contains(rerr.Error(), "disk is full") {
		t.Errorf("receiver: %v", rerr)
	}
	if _, err := os.Stat(filepath.Join(inbox, "big")); err == nil {
		t.Error("a truncated file sits under the final name")
	}
	var st syscall.Statfs_t
	syscall.Statfs(inbox, &st)
}

func TestCleanPathAllowsOrdinaryNames(t *testing.T) {
	for _, p := range []string{"a", "photos/2026/IMG_0001.JPG", "résumé (final).pdf", ".bashrc", "console/x", "COM10"} {
		if _, err := CleanPath(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
}

func TestUniqueName(t *testing.T) {
	taken := map[string]bool{"a.txt": true, "a (1).txt": true, "d/.rc": true, "x.tar.gz": true}
	ex := func(s string) bool { return taken[s] }
	for in, want := range map[string]string{"a.txt": "a (2).txt", "d/.rc": "d/.rc (1)", "new": "new", "x.tar.gz": "x.tar (1).gz"} {
		if got := uniqueName(in, ex); got != want {
			t.Errorf("uniqueName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzReceiverInput(f *testing.F) {
	var seed bytes.Buffer
	w := frameWriter{bufio.NewWriter(&seed)}
	w.writeJSON(frameOffer, offerOf(Entry{Path: "a/b", Size: 3, Mode: 0o644}, Entry{Path: "a", Mode: fs.ModeDir | 0o755}))
	w.write(frameBegin, encodeBegin(0, 0))
	w.write(frameData, []byte("abc"))
	h := sha256.Sum256([]byte("abc"))
	w.write(frameEnd, h[:])
	w.write(frameDone, nil)
	w.w.Flush()
	f.Add(bytes.Clone(seed.Bytes()))
	f.Add([]byte{frameOffer, 2, '{', '}'})
	seed.Reset() // chunks at offsets on the main stream, one leaving a gap
	w.writeJSON(frameOffer, offerOf(Entry{Path: "c", Size: 6, Mode: 0o644}))
	w.write(frameBegin, encodeBegin(0, 0))
	w.write(frameChunk, append(appendChunkHeader(nil, 0, 4), "ef"...))
	w.write(frameChunk, append(appendChunkHeader(nil, 0, 0), "abcd"...))
	h6 := sha256.Sum256([]byte("abcdef"))
	w.write(frameEnd, h6[:])
	w.write(frameDone, nil)
	w.w.Flush()
	f.Add(bytes.Clone(seed.Bytes()))
	seed.Reset()
	links := []Entry{{Path: "t", Mode: fs.ModeDir | 0o755}, linkEntry("t/d", "."), linkEntry("t/up2", "d/d/../.."), linkEntry("t/a", "x/.."), linkEntry("t/x", ".")}
	w.writeJSON(frameOffer, offerOf(links...))
	for i := range links {
		w.write(frameBegin, encodeBegin(i, 0))
		w.write(frameEnd, nil)
	}
	w.write(frameDone, nil)
	w.w.Flush()
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		inbox := t.TempDir()
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		(&Inbox{Dir: inbox}).Receive(ctx, rw, "fuzz", nil, nil)
		// Whatever happened, nothing may exist outside the inbox's tree
		// and every name inside must be one CleanPath accepts.
		filepath.WalkDir(inbox, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(inbox, p)
			if rel == "." || strings.HasPrefix(rel, partialDir) {
				return nil
			}
			if _, err := CleanPath(filepath.ToSlash(rel)); err != nil {
				t.Fatalf("created %q", rel)
			}
			return nil
		})
		checkLinksInside(t, inbox)
	})
}

func FuzzDecodeOffer(f *testing.F) {
	b, _ := json.Marshal(offerOf(Entry{Path: "x/y", Size: 1}, Entry{Path: "x/l", Mode: fs.ModeSymlink, Link: "y"}))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOffer(b, false)
		if err != nil {
			return
		}
		for _, e := range o.Entries {
			if _, err := CleanPath(e.Path); err != nil {
				t.Fatalf("accepted entry with bad path %q", e.Path)
			}
		}
	})
}

// A resume that starts while the receiver still waits on the first
// transfer of the same file takes the file over: when the first one ends
// after the resume landed the file, it leaves it alone (it used to cut
// the landed file back to its own prefix: a file whose SHA-256 differed
// after a receive that said it was fine).
func TestAnOlderTransferLeavesAResumedFileAlone(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	f := filepath.Join(src, "big.bin")
	data := writeRandom(t, f, 8<<20)
	in := &Inbox{Dir: inbox}

	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		defer b.Close()
		_, err := in.Receive(ctx, b, "peer-key", nil, nil)
		first <- err
	}()
	stall := &cutConn{Conn: a, left: 3 << 20, stall: make(chan struct{})}
	sent := make(chan error, 1)
	go func() {
		_, err := Send(ctx, stall, mustScan(t, f), nil)
		sent <- err
	}()
	for { // the first transfer has written what it got
		if parts, _ := filepath.Glob(filepath.Join(inbox, partialDir, "*.part")); len(parts) == 1 {
			if st, err := os.Stat(parts[0]); err == nil && st.Size() >= 2<<20 {
				break
			}
		}
		select {
		case err := <-first:
			t.Fatalf("the first transfer ended early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}

	_, res, serr, rerr := transferWith(t, mustScan(t, f), in, nil)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	close(stall.stall) // now the first sender's link fails
	if err := <-first; err == nil {
		t.Fatal("the first transfer succeeded")
	}
	<-sent
	if res[0].Name != "big.bin" || sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(data) {
		t.Fatal("the resumed file differs once the older transfer ended")
	}
}
