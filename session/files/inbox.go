package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Inbox receives files into Dir. Everything it creates stays under Dir:
// paths from the peer are checked with CleanPath, every file operation
// goes through an os.Root, nothing is written through a symlink, and a
// symlink from the peer is created only if it resolves inside what was
// sent. Modes follow the receiver's umask and are never world-writable.
//
// Partial files wait in Dir/.kin-partial for the sender to resume them;
// those nobody resumes are removed after PartialMaxAge, and at once when a
// new transfer runs out of space.
type Inbox struct {
	Dir string

	// windows makes the inbox take only names Windows can (Portable), as
	// it does on Windows; for tests elsewhere.
	windows bool

	mu     sync.Mutex
	inUse  map[string]int       // partial files of running transfers, by name: how many hold each
	owner  map[string]*receiver // the newest of them: the only one that writes it
	linkMu sync.Mutex           // one transfer at a time checks and makes its links
}

// PartialMaxAge is how long a partial file that no sender resumes is kept.
const PartialMaxAge = 7 * 24 * time.Hour

// unwritable is an inbox that cannot be written, and why.
type unwritable struct {
	dir string
	err error
}

func (u *unwritable) Error() string {
	return fmt.Sprintf("cannot write to the inbox %s: %v", u.dir, u.err)
}
func (u *unwritable) Unwrap() error        { return u.err }
func (u *unwritable) Is(target error) bool { return target == ErrInboxUnwritable }

// Check makes sure the inbox exists and can be written (it creates it and
// a file in it), so that a receiver fails at start with the reason rather
// than when a friend sends. It also removes partial files older than
// PartialMaxAge. The error matches ErrInboxUnwritable.
func (in *Inbox) Check() error {
	root, err := in.open()
	if err != nil {
		return err
	}
	defer root.Close()
	in.prune(root, PartialMaxAge)
	return nil
}

// open creates the inbox and its state directory, checks that a file can
// be created there, and returns the inbox as an os.Root.
func (in *Inbox) open() (*os.Root, error) {
	fail := func(err error) (*os.Root, error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return nil, &unwritable{dir: in.Dir, err: err}
	}
	if err := os.MkdirAll(in.Dir, 0o755); err != nil {
		return fail(err)
	}
	root, err := os.OpenRoot(in.Dir)
	if err != nil {
		return fail(err)
	}
	if err := root.MkdirAll(partialDir, 0o700); err != nil {
		root.Close()
		return fail(err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	probe := partialDir + "/probe-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		root.Close()
		return fail(err)
	}
	f.Close()
	root.Remove(probe)
	return root, nil
}

// Partials reports the partial files waiting in the inbox for a sender to
// resume them: how many, and how many bytes they hold.
func (in *Inbox) Partials() (n int, bytes int64, err error) {
	entries, err := os.ReadDir(filepath.Join(in.Dir, partialDir))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	for _, d := range entries {
		if !strings.HasSuffix(d.Name(), ".part") {
			continue
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			n++
			bytes += info.Size()
		}
	}
	return n, bytes, nil
}

// hold marks partial files as belonging to rc, a running transfer, so
// that no other transfer removes them, and makes rc their owner: a resume
// that starts while an older transfer of the same file has not yet noticed
// its sender is gone takes the file over, and the older one may no longer
// write, cut back or move it (it used to cut a file the resume had
// finished back to its own prefix). release undoes it.
func (in *Inbox) hold(rc *receiver, names []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.inUse == nil {
		in.inUse, in.owner = map[string]int{}, map[string]*receiver{}
	}
	for _, n := range names {
		in.inUse[n]++
		in.owner[n] = rc
	}
}

// owns says whether rc is the newest transfer holding a partial file.
func (in *Inbox) owns(rc *receiver, name string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.owner[name] == rc
}

// whileOwner runs f if rc owns the partial file name, with no other
// transfer able to take it over meanwhile, and says whether it ran.
func (in *Inbox) whileOwner(rc *receiver, name string, f func()) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.owner[name] != rc {
		return false
	}
	f()
	return true
}

func (in *Inbox) release(rc *receiver, names []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, n := range names {
		if in.inUse[n]--; in.inUse[n] <= 0 {
			delete(in.inUse, n)
		}
		if in.owner[n] == rc {
			delete(in.owner, n)
		}
	}
}

// errTakenOver ends an older transfer's work on a file a newer one resumed.
var errTakenOver = &entryError{msg: "a newer transfer of this file took it over", fatal: true}

// prune removes partial files that no running transfer holds and that
// were last written more than olderThan ago (0: all of them). It returns
// the bytes freed.
func (in *Inbox) prune(root *os.Root, olderThan time.Duration) int64 {
	dir, err := root.Open(partialDir)
	if err != nil {
		return 0
	}
	entries, _ := dir.ReadDir(-1)
	dir.Close()
	in.mu.Lock()
	defer in.mu.Unlock()
	var freed int64
	for _, d := range entries {
		name := partialDir + "/" + d.Name()
		if !strings.HasSuffix(name, ".part") || in.inUse[name] > 0 {
			continue
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < olderThan {
			continue
		}
		if root.Remove(name) == nil {
			freed += info.Size()
			root.Remove(sidecarOf(name))
			root.Remove(sidecarOf(name) + sidecarNew)
		}
	}
	return freed
}

// Receive reads one transfer from rw. decide sees the offer first and may
// refuse it (its error is sent to the peer); peerKey identifies the sender
// stably (e.g. its key's fingerprint) so that a repeated send resumes.
// It returns one Result per entry. An inbox that cannot be written is
// reported to the sender as such (ErrInboxUnwritable on its side).
func (in *Inbox) Receive(ctx context.Context, rw io.ReadWriter, peerKey string, decide func(Offer) error, progress func(Progress)) ([]Result, error) {
	return in.ReceiveWith(ctx, rw, peerKey, LaneOptions{}, decide, progress)
}

// ReceiveWith is Receive that also takes big files in chunks on extra
// lanes, when the sender asks and opts.Lanes can accept them (lanes.go).
func (in *Inbox) ReceiveWith(ctx context.Context, rw io.ReadWriter, peerKey string, opts LaneOptions, decide func(Offer) error, progress func(Progress)) ([]Result, error) {
	r := bufio.NewReaderSize(rw, 256<<10)
	w := frameWriter{bufio.NewWriterSize(rw, 16<<10)}
	typ, payload, err := readFrame(r, nil)
	if err != nil {
		return nil, fmt.Errorf("read offer: %w", err)
	}
	if typ != frameOffer {
		return nil, fmt.Errorf("expected an offer, got frame type %d", typ)
	}
	offer, err := decodeOffer(payload, in.windows || runtime.GOOS == "windows")
	if errors.Is(err, ErrNotPortable) {
		// The sender can do something about it (kin send --rename).
		reason := err.Error()
		if why := errors.Unwrap(err); why != nil {
			reason = why.Error() // which name, and why; not our wording for the peer
		}
		w.writeJSON(frameRefuse, refusal{Code: codeNotPortable, Reason: reason})
		w.w.Flush()
		return nil, err
	}
	if err != nil {
		w.write(frameReject, []byte(err.Error()))
		w.w.Flush()
		return nil, err
	}
	if decide != nil {
		if err := decide(offer); err != nil {
			w.write(frameReject, []byte(err.Error()))
			w.w.Flush()
			return nil, err
		}
	}
	root, err := in.open()
	if err != nil {
		reason := err.Error()
		if u := (*unwritable)(nil); errors.As(err, &u) {
			reason = u.err.Error() // the sender need not learn where our inbox is
		}
		w.writeJSON(frameRefuse, refusal{Code: codeInboxUnwritable, Reason: reason})
		w.w.Flush()
		return nil, err
	}
	defer root.Close()
	rc := &receiver{in: in, root: root, offer: offer, peerKey: peerKey, w: w, results: make([]*Result, len(offer.Entries)), begun: make([]bool, len(offer.Entries)), umask: umask()}
	rc.cond = sync.NewCond(&rc.mu)
	var parts []string
	for i, e := range offer.Entries {
		if !e.IsDir() && !e.IsLink() {
			parts = append(parts, rc.partName(i))
		}
	}
	in.hold(rc, parts)
	defer in.release(rc, parts)
	in.prune(root, PartialMaxAge)
	nfiles, total := offer.Files()
	rc.pr = Progress{Total: total, FilesTotal: nfiles}
	rc.progress = progress

	acc := acceptMsg{Have: map[int]int64{}}
	for i, e := range offer.Entries {
		if e.IsDir() || e.IsLink() || e.Size < 0 {
			continue
		}
		if name, ok := rc.alreadyHave(i); ok {
			acc.Have[i] = e.Size
			rc.results[i] = &Result{Index: i, Name: name}
			rc.pr.Done += e.Size
			rc.pr.FilesDone++
			continue
		}
		if have := rc.partialHave(i); have > 0 {
			acc.Have[i] = have
		}
	}
	rc.have = acc.Have
	if offer.Lanes && opts.Lanes != nil {
		tokens, hx := newTokens(laneTokens)
		lanes, stop := opts.Lanes.Expect(tokens)
		acc.Lanes = hx
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc.takeLanes(lanes, done, &wg)
		}()
		defer func() { // before root.Close: lanes write into the inbox
			stop()
			close(done)
			rc.mu.Lock()
			rc.over = true
			for _, l := range rc.laneConns {
				l.Close()
			}
			rc.cond.Broadcast()
			rc.mu.Unlock()
			wg.Wait()
		}()
	}
	if err := w.writeJSON(frameAccept, acc); err != nil {
		return nil, err
	}
	for _, res := range rc.results {
		if res != nil {
			w.writeJSON(frameResult, res)
		}
	}
	if err := w.w.Flush(); err != nil {
		return nil, err
	}
	err = rc.loop(ctx, r)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.list(), err
}

// partialHave is how many bytes of entry i a partial file holds that a
// send can resume from: all of it, or, when chunks on lanes left gaps, its
// contiguous prefix as recorded beside it.
func (rc *receiver) partialHave(i int) int64 {
	st, err := rc.root.Stat(rc.partName(i))
	if err != nil || !st.Mode().IsRegular() || st.Size() > rc.offer.Entries[i].Size || st.Size() <= 0 {
		return 0
	}
	have := st.Size()
	f, err := rc.root.Open(sidecarOf(rc.partName(i)))
	if errors.Is(err, fs.ErrNotExist) {
		return have
	}
	if err != nil {
		return 0
	}
	defer f.Close()
	b := make([]byte, 24)
	n, _ := io.ReadFull(f, b)
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	if err != nil || v < 0 {
		return 0 // cut short by a crash: start over
	}
	return min(have, v)
}

// sidecarOf names the file beside a partial that records its contiguous
// prefix while chunks on lanes leave gaps after it.
func sidecarOf(part string) string { return strings.TrimSuffix(part, ".part") + ".have" }

// takeLanes serves each lane that arrives until done.
func (rc *receiver) takeLanes(lanes <-chan io.ReadWriteCloser, done <-chan struct{}, wg *sync.WaitGroup) {
	for {
		select {
		case l := <-lanes:
			rc.mu.Lock()
			if rc.over {
				rc.mu.Unlock()
				l.Close()
				continue
			}
			rc.laneConns = append(rc.laneConns, l)
			rc.lanesInUse++
			rc.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				rc.serveLane(l)
			}()
		case <-done:
			return
		}
	}
}

// serveLane writes the chunks that arrive on lane l and acknowledges each
// once written. Anything wrong ends the lane (the sender sends its
// unacknowledged chunks on the others, the main stream included, where an
// error is reported as usual).
func (rc *receiver) serveLane(l io.ReadWriteCloser) {
	defer func() {
		l.Close()
		rc.mu.Lock()
		rc.lanesInUse--
		rc.mu.Unlock()
	}()
	r := bufio.NewReaderSize(l, 256<<10)
	w := frameWriter{bufio.NewWriterSize(l, 4<<10)}
	buf := make([]byte, maxFrameBytes)
	for {
		typ, payload, err := readFrame(r, buf)
		if err != nil || typ != frameChunk {
			return
		}
		i, off, data, err := decodeChunk(payload)
		if err != nil {
			return
		}
		written, err := rc.laneChunk(i, off, data)
		if err != nil {
			return
		}
		if !written {
			continue // stale: for a file that is over
		}
		if err := w.write(frameAck, encodeAck(i, off, len(data))); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.w.Flush(); err != nil {
				return
			}
		}
	}
}

// laneChunk writes a chunk that came on a lane, once the main stream has
// begun its file (the sender begins a file before it sends chunks of it,
// but the lane may be quicker).
func (rc *receiver) laneChunk(i int, off int64, data []byte) (bool, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if i < 0 || i >= len(rc.begun) {
		return false, errors.New("chunk for no entry")
	}
	for !rc.begun[i] && !rc.over {
		rc.cond.Wait()
	}
	if rc.over || rc.cur != i || rc.f == nil {
		return false, nil
	}
	if _, err := rc.writeAt(off, data); err != nil {
		return false, err
	}
	rc.report()
	return true, nil
}

type receiver struct {
	// mu guards everything below against the lanes' goroutines, which
	// write chunks into the current file; cond tells them a file began.
	mu         sync.Mutex
	cond       *sync.Cond
	over       bool
	laneConns  []io.ReadWriteCloser
	lanesInUse int

	in       *Inbox
	root     *os.Root
	umask    fs.FileMode
	links    []int  // symlink entries, created last
	begun    []bool // entries the sender has begun
	retried  bool   // space was freed once after the disk was full
	offer    Offer
	peerKey  string
	w        frameWriter
	have     map[int]int64
	results  []*Result
	pr       Progress
	progress func(Progress)

	// the file being received
	cur     int
	f       *os.File
	h       hash.Hash
	written int64 // the contiguous prefix: written and hashed
	flushed int64 // rc.f's bytes up to here are on their way to the disk
	dropped int64 // and up to here on it, and out of the page cache
	// chunks (lanes): what arrived beyond the prefix, and whether (and
	// with what) the sidecar records the prefix
	above      spans
	aboveBytes int64
	sidecar    bool
	sideAt     int64
	rbuf       []byte
}

// writebackBytes is how much written data the receiver lets pile up before
// it asks the OS to start writing it out (writeBehind), so that the fsync
// before the rename has little left to do (an fsync of 256 MiB alone took
// 0.5 s), and the page cache holds two such windows of the file.
const writebackBytes = 8 << 20

func (rc *receiver) list() []Result {
	var out []Result
	for _, r := range rc.results {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// key names an entry's resumable state: same sender, path, size and mtime.
func (rc *receiver) key(i int) string {
	e := rc.offer.Entries[i]
	sum := sha256.Sum256([]byte(rc.peerKey + "\x00" + e.Path + "\x00" + strconv.FormatInt(e.Size, 10) + "\x00" + strconv.FormatInt(e.ModTime.UnixNano(), 10)))
	return hex.EncodeToString(sum[:16])
}

func (rc *receiver) partName(i int) string { return partialDir + "/" + rc.key(i) + ".part" }
func (rc *receiver) doneName(i int) string { return partialDir + "/" + rc.key(i) + ".done" }

// alreadyHave reports whether entry i was received completely before and
// still sits where it landed.
func (rc *receiver) alreadyHave(i int) (string, bool) {
	b, err := rc.root.ReadFile(rc.doneName(i))
	if err != nil {
		return "", false
	}
	name := string(b)
	if _, err := CleanPath(name); err != nil {
		return "", false
	}
	st, err := rc.root.Lstat(name)
	if err != nil || !st.Mode().IsRegular() || st.Size() != rc.offer.Entries[i].Size {
		return "", false
	}
	return name, true
}

func (rc *receiver) loop(ctx context.Context, r *bufio.Reader) error {
	buf := make([]byte, maxFrameBytes)
	rc.mu.Lock()
	rc.cur = -1
	rc.mu.Unlock()
	defer func() {
		rc.mu.Lock()
		rc.closeCurrent()
		rc.mu.Unlock()
	}()
	var dirs []int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		typ, payload, err := readFrame(r, buf)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				rc.mu.Lock()
				kept := rc.f != nil && rc.written > 0
				rc.mu.Unlock()
				if kept {
					return errors.New("the sender went away before the transfer was complete (partial data kept; sending again resumes it)")
				}
				return errors.New("the sender went away before the transfer was complete; sending again continues it")
			}
			return err
		}
		rc.mu.Lock()
		done, err := rc.frame(typ, payload, r, &dirs)
		rc.mu.Unlock()
		if done || err != nil {
			return err
		}
	}
}

// frame handles one frame from the main stream (under mu); done means the
// transfer is complete.
func (rc *receiver) frame(typ byte, payload []byte, r *bufio.Reader, dirs *[]int) (done bool, _ error) {
	switch typ {
	case frameBegin:
		i, off, err := decodeBegin(payload)
		if err != nil {
			return false, err
		}
		if rc.cur >= 0 || i >= len(rc.offer.Entries) || rc.results[i] != nil || rc.begun[i] {
			return false, fmt.Errorf("sender began entry %d out of order", i)
		}
		rc.begun[i] = true
		rc.cond.Broadcast()
		if off != rc.have[i] {
			return false, fmt.Errorf("sender resumes %s at %d, receiver has %d", rc.offer.Entries[i].Path, off, rc.have[i])
		}
		rc.cur = i
		e := rc.offer.Entries[i]
		if e.IsDir() {
			*dirs = append(*dirs, i)
		}
		if !e.IsDir() && !e.IsLink() {
			if err := rc.openPart(i, off); err != nil {
				return false, rc.fail(i, err)
			}
		}
	case frameData, frameChunk:
		if rc.cur < 0 || rc.f == nil {
			return false, errors.New("sender sent data outside a file")
		}
		off, data := rc.written, payload
		if typ == frameChunk {
			i, o, d, err := decodeChunk(payload)
			if err != nil {
				return false, err
			}
			if i != rc.cur || rc.offer.Entries[i].Size < 0 {
				return false, fmt.Errorf("sender sent a chunk of entry %d while sending entry %d", i, rc.cur)
			}
			off, data = o, d
		}
		if _, err := rc.writeAt(off, data); err != nil {
			return false, rc.fail(rc.cur, err)
		}
		rc.report()
	case frameEnd:
		if rc.cur < 0 {
			return false, errors.New("sender ended a file it had not begun")
		}
		i := rc.cur
		rc.cur = -1
		if rc.offer.Entries[i].IsLink() {
			rc.links = append(rc.links, i) // created last, see makeLinks
			return false, nil
		}
		name, err := rc.finish(i, payload)
		if err != nil {
			if ferr := rc.fail(i, err); isFatal(err) {
				return false, ferr
			}
			return false, nil
		}
		rc.results[i] = &Result{Index: i, Name: name}
		if err := rc.w.writeJSON(frameResult, rc.results[i]); err != nil {
			return false, err
		}
		if r.Buffered() == 0 {
			if err := rc.w.w.Flush(); err != nil {
				return false, err
			}
		}
	case frameDone:
		if rc.cur >= 0 {
			return false, errors.New("sender finished in the middle of a file")
		}
		rc.makeLinks()
		// Directory times last: creating files inside changes them.
		for j := len(*dirs) - 1; j >= 0; j-- {
			e := rc.offer.Entries[(*dirs)[j]]
			if name := rc.results[(*dirs)[j]]; name != nil && name.Error == "" {
				rc.root.Chtimes(name.Name, time.Now(), e.ModTime)
			}
		}
		for i, res := range rc.results {
			if res == nil {
				rc.results[i] = &Result{Index: i, Error: "not sent"}
				rc.w.writeJSON(frameResult, rc.results[i])
			}
		}
		return true, rc.w.w.Flush()
	default:
		return false, fmt.Errorf("unexpected frame type %d from the sender", typ)
	}
	return false, nil
}

// writeAt writes p at off into the current partial file (under mu) and
// hashes whatever it adds to the contiguous prefix (read back from the
// file when it joins chunks that came earlier). It returns the bytes that
// were new. When the disk is full it removes the partial files that no
// running transfer holds, once per transfer, and tries again.
func (rc *receiver) writeAt(off int64, p []byte) (int64, error) {
	e := rc.offer.Entries[rc.cur]
	end := off + int64(len(p))
	if e.Size >= 0 && end > e.Size {
		return 0, fatalf("sender sent more than the %d bytes it announced", e.Size)
	}
	if end <= rc.written {
		return 0, nil // again: a chunk a lost lane had delivered after all
	}
	if !rc.in.owns(rc, rc.partName(rc.cur)) {
		return 0, errTakenOver
	}
	if off > rc.written && !rc.sidecar {
		// A gap: from now on the file's size is not what a resume may
		// start from; the sidecar says what is.
		if err := rc.writeSidecar(); err != nil {
			return 0, diskError(err, rc.written > 0)
		}
		rc.sidecar = true
	}
	n, err := rc.f.WriteAt(p, off)
	if err != nil && isNoSpace(err) && !rc.retried {
		rc.retried = true
		if freed := rc.in.prune(rc.root, 0); freed > 0 {
			_, err = rc.f.WriteAt(p[n:], off+int64(n))
		}
	}
	if err != nil {
		return 0, diskError(err, rc.written > 0) // closeCurrent cuts the file back to its prefix
	}
	before := rc.written + rc.aboveBytes
	if off <= rc.written {
		rc.h.Write(p[rc.written-off:])
		rc.written = end
	} else {
		rc.above.add(off, end)
	}
	for len(rc.above) > 0 && rc.above[0].start <= rc.written {
		if x := rc.above[0]; x.end > rc.written {
			if err := rc.hashFile(x.end); err != nil {
				return 0, fatalf("reading back what was written: %v", err)
			}
		}
		rc.above = rc.above[1:]
	}
	rc.aboveBytes = 0
	for _, x := range rc.above {
		rc.aboveBytes += x.end - x.start
	}
	fresh := rc.written + rc.aboveBytes - before
	if rc.written-rc.flushed >= writebackBytes {
		writeBehind(rc.f, rc.dropped, rc.flushed, rc.written)
		rc.dropped, rc.flushed = rc.flushed, rc.written
	}
	switch {
	case rc.sidecar && len(rc.above) == 0:
		// The gaps closed: the file's size is its prefix again, up to
		// date where the sidecar would not be (one lane in order closes
		// its first gap, behind the main stream's first chunk, at once).
		if err := rc.root.Remove(sidecarOf(rc.partName(rc.cur))); err == nil || errors.Is(err, fs.ErrNotExist) {
			rc.sidecar = false
		}
	case rc.sidecar && rc.written-rc.sideAt >= sidecarEvery:
		rc.writeSidecar() // best effort: an older value only means more is sent again
	}
	rc.pr.FileDone += fresh
	rc.pr.Done += fresh
	rc.pr.Moved += fresh
	return fresh, nil
}

// hashFile extends the hashed prefix to end from the file's bytes.
func (rc *receiver) hashFile(end int64) error {
	if rc.rbuf == nil {
		rc.rbuf = make([]byte, 256<<10)
	}
	for rc.written < end {
		b := rc.rbuf[:min(int64(len(rc.rbuf)), end-rc.written)]
		if _, err := rc.f.ReadAt(b, rc.written); err != nil {
			return err
		}
		rc.h.Write(b)
		rc.written += int64(len(b))
	}
	return nil
}

// writeSidecar records the contiguous prefix of the current file. It
// writes aside and renames over the old record: a resume that starts while
// this transfer still writes (its sender was killed, its lanes still hand
// over what they buffered) reads the old value or the new one, never an
// empty file, which would start the file over.
func (rc *receiver) writeSidecar() error {
	rc.sideAt = rc.written
	side := sidecarOf(rc.partName(rc.cur))
	if err := rc.root.WriteFile(side+sidecarNew, []byte(strconv.FormatInt(rc.written, 10)), 0o600); err != nil {
		return err
	}
	return rc.root.Rename(side+sidecarNew, side)
}

// sidecarNew ends the name a sidecar is written under before it replaces
// the old one.
const sidecarNew = ".new"

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// entryError is why one entry failed; fatal ones end the transfer.
type entryError struct {
	msg   string
	code  string // sent to the sender with the result
	fatal bool
}

func (e *entryError) Error() string { return e.msg }

func fatalf(format string, a ...any) error {
	return &entryError{msg: fmt.Sprintf(format, a...), fatal: true}
}

func isFatal(err error) bool {
	var e *entryError
	return errors.As(err, &e) && e.fatal
}

// diskError describes a failed write to the inbox; kept says whether the
// partial file holds data a new send resumes from.
func diskError(err error, kept bool) error {
	switch {
	case isNoSpace(err):
		msg := "the receiver's disk is full"
		if kept {
			msg += " (partial data kept; sending again resumes)"
		}
		return &entryError{msg: msg, code: codeDiskFull, fatal: true}
	case errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return &entryError{msg: fmt.Sprintf("the receiver cannot write its inbox: %v", err), code: codeInboxUnwritable, fatal: true}
	}
	return &entryError{msg: fmt.Sprintf("write: %v", err), fatal: true}
}

// fail records err as entry i's result, tells the sender, and returns an
// error for the transfer.
func (rc *receiver) fail(i int, err error) error {
	rc.closeCurrent()
	rc.cur = -1
	res := &Result{Index: i, Error: err.Error()}
	var ee *entryError
	if errors.As(err, &ee) {
		res.Code = ee.code
	}
	rc.results[i] = res
	rc.w.writeJSON(frameResult, res)
	rc.w.w.Flush()
	return fmt.Errorf("%s: %s", rc.offer.Entries[i].Path, res.Error)
}

func (rc *receiver) report() {
	rc.pr.Lanes = max(1, rc.lanesInUse) // the main stream carries a file while no lane does
	if rc.progress != nil {
		rc.progress(rc.pr)
	}
}

func (rc *receiver) openPart(i int, off int64) error {
	f, err := rc.root.OpenFile(rc.partName(i), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return diskError(err, off > 0)
	}
	h := sha256.New()
	if off > 0 {
		if _, err := io.CopyN(h, f, off); err != nil {
			f.Close()
			return fatalf("reading partial data: %v", err)
		}
	}
	if err := f.Truncate(off); err != nil {
		f.Close()
		return diskError(err, off > 0)
	}
	if err := rc.root.Remove(sidecarOf(rc.partName(i))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.Close()
		return diskError(err, off > 0)
	}
	e := rc.offer.Entries[i]
	rc.f, rc.h, rc.written, rc.flushed, rc.dropped = f, h, off, off, off
	rc.above, rc.aboveBytes, rc.sidecar, rc.sideAt = nil, 0, false, off
	rc.pr.File, rc.pr.FileSize, rc.pr.FileDone = e.Path, e.Size, off
	rc.pr.Done += off
	return nil
}

// closeCurrent closes a file left unfinished, cut back to its contiguous
// prefix (what a resume starts from), and drops its sidecar; unless a
// newer transfer (a resume that started before this one noticed its
// sender was gone) took the file over: then it is that one's.
func (rc *receiver) closeCurrent() {
	if rc.f == nil {
		return
	}
	name := rc.partName(rc.cur)
	rc.in.whileOwner(rc, name, func() {
		if st, err := rc.f.Stat(); err == nil && st.Size() > rc.written {
			rc.f.Truncate(rc.written)
		}
		if rc.sidecar {
			rc.root.Remove(sidecarOf(name))
		}
	})
	rc.f.Close()
	rc.f = nil
	rc.sidecar = false
}

// perm is the mode bits the receiver gives an entry the sender sent with
// mode m: the receiver's umask applies, and nothing is world-writable
// (fs.FileMode.Perm already drops setuid, setgid and sticky).
func (rc *receiver) perm(m fs.FileMode) fs.FileMode {
	return m.Perm() &^ rc.umask &^ 0o002
}

// finish completes entry i, a file or directory: verify, fsync, and move
// to its final name.
func (rc *receiver) finish(i int, sum []byte) (string, error) {
	e := rc.offer.Entries[i]
	if e.IsDir() {
		if err := rc.mkdirs(e.Path); err != nil {
			return "", err
		}
		rc.root.Chmod(e.Path, rc.perm(e.Mode|0o700))
		return e.Path, nil
	}
	f := rc.f
	rc.f = nil
	if f == nil {
		return "", errors.New("no data")
	}
	defer f.Close()
	if !rc.in.owns(rc, rc.partName(i)) {
		return "", errTakenOver // nothing of it is this transfer's to verify, remove or move
	}
	if e.Size >= 0 && rc.written != e.Size {
		return "", fatalf("the sender sent %d of the %d bytes it announced (partial data kept; sending again resumes)", rc.written, e.Size)
	}
	if !bytes.Equal(sum, rc.h.Sum(nil)) {
		f.Close()
		rc.root.Remove(rc.partName(i))
		rc.root.Remove(sidecarOf(rc.partName(i)))
		return "", fatalf("SHA-256 mismatch: the data was damaged on the way; nothing was kept")
	}
	if err := f.Sync(); err != nil {
		return "", diskError(err, true)
	}
	if err := f.Close(); err != nil {
		return "", diskError(err, true)
	}
	if err := rc.mkParent(e.Path); err != nil {
		rc.root.Remove(rc.partName(i)) // it can never land there
		return "", err
	}
	name := uniqueName(e.Path, rc.exists)
	if err := rc.root.Rename(rc.partName(i), name); err != nil {
		return "", fatalf("move into place: %v", err)
	}
	if rc.sidecar {
		rc.root.Remove(sidecarOf(rc.partName(i)))
		rc.sidecar = false
	}
	rc.root.Chmod(name, rc.perm(e.Mode))
	if !e.ModTime.IsZero() {
		rc.root.Chtimes(name, time.Now(), e.ModTime)
	}
	if e.Size >= 0 {
		rc.root.WriteFile(rc.doneName(i), []byte(name), 0o600)
	}
	rc.pr.FilesDone++
	rc.report()
	return name, nil
}

// makeLinks creates the symlinks of the transfer, after everything else,
// and only those that resolve inside their top-level directory with every
// link (theirs, and those already in the inbox) followed. The others are
// skipped with a warning in their result.
func (rc *receiver) makeLinks() {
	rc.in.linkMu.Lock()
	defer rc.in.linkMu.Unlock()
	var reqs []linkReq
	var idx []int
	taken := map[string]bool{}
	for _, i := range rc.links {
		e := rc.offer.Entries[i]
		if err := rc.mkParent(e.Path); err != nil {
			rc.fail(i, err)
			continue
		}
		name := uniqueName(e.Path, func(n string) bool { return taken[n] || rc.exists(n) })
		taken[name] = true
		reqs = append(reqs, linkReq{Name: name, Target: e.Link})
		idx = append(idx, i)
	}
	refused := confineLinks(reqs, func(p string) (string, bool, bool) {
		st, err := rc.root.Lstat(p)
		if err != nil {
			return "", false, false
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			return "", false, true
		}
		target, err := rc.root.Readlink(p)
		if err != nil {
			return "", false, true
		}
		return filepath.ToSlash(target), true, true
	})
	for j, l := range reqs {
		i := idx[j]
		res := &Result{Index: i, Name: l.Name}
		if why, ok := refused[j]; ok {
			res = &Result{Index: i, Warning: fmt.Sprintf("skipped symlink %s -> %s: %s", rc.offer.Entries[i].Path, l.Target, why)}
		} else if err := rc.root.Symlink(l.Target, l.Name); err != nil {
			res = &Result{Index: i, Error: fmt.Sprintf("create symlink: %v", err)}
		}
		rc.results[i] = res
		rc.w.writeJSON(frameResult, res)
	}
}

// mkParent makes the directories above p.
func (rc *receiver) mkParent(p string) error {
	if dir := path.Dir(p); dir != "." {
		return rc.mkdirs(dir)
	}
	return nil
}

// mkdirs makes the directory p and those above it, one at a time, and
// refuses to go through a symlink: a path from the peer is never written
// through a link, wherever the link points.
func (rc *receiver) mkdirs(p string) error {
	parts := strings.Split(p, "/")
	for k := range parts {
		dir := strings.Join(parts[:k+1], "/")
		st, err := rc.root.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := rc.root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return diskErrorOr(fmt.Errorf("create directory %s: %w", dir, err), err)
			}
		case err != nil:
			return fmt.Errorf("create directory %s: %w", dir, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("refused %s: %s is a symlink in the inbox, and nothing is written through one", p, dir)
		case !st.IsDir():
			return fmt.Errorf("refused %s: %s is a file in the inbox", p, dir)
		}
	}
	return nil
}

// diskErrorOr is diskError for an inbox that cannot be written or is full,
// and err otherwise.
func diskErrorOr(err, cause error) error {
	if isNoSpace(cause) || errors.Is(cause, syscall.EROFS) || errors.Is(cause, fs.ErrPermission) {
		return diskError(cause, false)
	}
	return err
}

func (rc *receiver) exists(name string) bool {
	_, err := rc.root.Lstat(name)
	return !errors.Is(err, fs.ErrNotExist)
}
