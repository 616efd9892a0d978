package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Inbox receives files into Dir. Everything it creates stays under Dir:
// paths from the peer are checked with CleanPath and every file operation
// goes through an os.Root, so a symlink cannot lead outside.
type Inbox struct {
	Dir string
}

// Receive reads one transfer from rw. decide sees the offer first and may
// refuse it (its error is sent to the peer); peerKey identifies the sender
// stably (e.g. its key's fingerprint) so that a repeated send resumes.
// It returns one Result per entry.
func (in *Inbox) Receive(ctx context.Context, rw io.ReadWriter, peerKey string, decide func(Offer) error, progress func(Progress)) ([]Result, error) {
	r := bufio.NewReaderSize(rw, 256<<10)
	w := frameWriter{bufio.NewWriterSize(rw, 16<<10)}
	typ, payload, err := readFrame(r, nil)
	if err != nil {
		return nil, fmt.Errorf("read offer: %w", err)
	}
	if typ != frameOffer {
		return nil, fmt.Errorf("expected an offer, got frame type %d", typ)
	}
	offer, err := decodeOffer(payload)
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
	if err := os.MkdirAll(in.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create inbox: %w", err)
	}
	root, err := os.OpenRoot(in.Dir)
	if err != nil {
		return nil, fmt.Errorf("open inbox: %w", err)
	}
	defer root.Close()
	if err := root.MkdirAll(partialDir, 0o700); err != nil {
		return nil, fmt.Errorf("create inbox state: %w", err)
	}
	rc := &receiver{root: root, offer: offer, peerKey: peerKey, w: w, results: make([]*Result, len(offer.Entries))}
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
		if st, err := root.Stat(rc.partName(i)); err == nil && st.Size() <= e.Size && st.Size() > 0 {
			acc.Have[i] = st.Size()
		}
	}
	rc.have = acc.Have
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
	if err := rc.loop(ctx, r); err != nil {
		return rc.list(), err
	}
	return rc.list(), nil
}

type receiver struct {
	root     *os.Root
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
	written int64
	flushed int64 // rc.f's bytes up to here are on their way to the disk
}

// writebackBytes is how much written data the receiver lets pile up before
// it asks the OS to start writing it out, so that the fsync before the
// rename has little left to do (an fsync of 256 MiB alone took 0.5 s).
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
	rc.cur = -1
	defer rc.closeCurrent()
	var dirs []int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		typ, payload, err := readFrame(r, buf)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return errors.New("the sender went away before the transfer was complete; sending again resumes it")
			}
			return err
		}
		switch typ {
		case frameBegin:
			i, off, err := decodeBegin(payload)
			if err != nil {
				return err
			}
			if rc.cur >= 0 || i >= len(rc.offer.Entries) || rc.results[i] != nil {
				return fmt.Errorf("sender began entry %d out of order", i)
			}
			if off != rc.have[i] {
				return fmt.Errorf("sender resumes %s at %d, receiver has %d", rc.offer.Entries[i].Path, off, rc.have[i])
			}
			rc.cur = i
			e := rc.offer.Entries[i]
			if e.IsDir() {
				dirs = append(dirs, i)
			}
			if !e.IsDir() && !e.IsLink() {
				if err := rc.openPart(i, off); err != nil {
					return rc.fail(i, err)
				}
			}
		case frameData:
			if rc.cur < 0 || rc.f == nil {
				return errors.New("sender sent data outside a file")
			}
			e := rc.offer.Entries[rc.cur]
			if e.Size >= 0 && rc.written+int64(len(payload)) > e.Size {
				return rc.fail(rc.cur, fmt.Errorf("sender sent more than the %d bytes it announced", e.Size))
			}
			if _, err := rc.f.Write(payload); err != nil {
				return rc.fail(rc.cur, diskError(err))
			}
			rc.h.Write(payload)
			rc.written += int64(len(payload))
			if rc.written-rc.flushed >= writebackBytes {
				startWriteback(rc.f, rc.flushed, rc.written-rc.flushed)
				rc.flushed = rc.written
			}
			rc.pr.FileDone = rc.written
			rc.pr.Done += int64(len(payload))
			rc.report()
		case frameEnd:
			if rc.cur < 0 {
				return errors.New("sender ended a file it had not begun")
			}
			i := rc.cur
			name, err := rc.finish(i, payload)
			rc.cur = -1
			if err != nil {
				if ferr := rc.fail(i, err); errors.Is(err, errFatal) {
					return ferr
				}
				continue
			}
			rc.results[i] = &Result{Index: i, Name: name}
			if err := rc.w.writeJSON(frameResult, rc.results[i]); err != nil {
				return err
			}
			if r.Buffered() == 0 {
				if err := rc.w.w.Flush(); err != nil {
					return err
				}
			}
		case frameDone:
			if rc.cur >= 0 {
				return errors.New("sender finished in the middle of a file")
			}
			// Directory times last: creating files inside changes them.
			for j := len(dirs) - 1; j >= 0; j-- {
				e := rc.offer.Entries[dirs[j]]
				if name := rc.results[dirs[j]]; name != nil && name.Error == "" {
					rc.root.Chtimes(name.Name, time.Now(), e.ModTime)
				}
			}
			for i, res := range rc.results {
				if res == nil {
					rc.results[i] = &Result{Index: i, Error: "not sent"}
					rc.w.writeJSON(frameResult, rc.results[i])
				}
			}
			return rc.w.w.Flush()
		default:
			return fmt.Errorf("unexpected frame type %d from the sender", typ)
		}
	}
}

// errFatal marks errors after which the transfer cannot go on (disk full,
// a lying sender).
var errFatal = errors.New("fatal")

func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: the receiver's disk is full (partial data kept; sending again resumes)", errFatal)
	}
	return fmt.Errorf("%w: write: %v", errFatal, err)
}

// fail records err as entry i's result, tells the sender, and returns an
// error for the transfer.
func (rc *receiver) fail(i int, err error) error {
	rc.closeCurrent()
	rc.cur = -1
	rc.results[i] = &Result{Index: i, Error: strings.TrimPrefix(err.Error(), errFatal.Error()+": ")}
	rc.w.writeJSON(frameResult, rc.results[i])
	rc.w.w.Flush()
	return fmt.Errorf("%s: %s", rc.offer.Entries[i].Path, rc.results[i].Error)
}

func (rc *receiver) report() {
	if rc.progress != nil {
		rc.progress(rc.pr)
	}
}

func (rc *receiver) openPart(i int, off int64) error {
	f, err := rc.root.OpenFile(rc.partName(i), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return diskError(err)
	}
	h := sha256.New()
	if off > 0 {
		if _, err := io.CopyN(h, f, off); err != nil {
			f.Close()
			return fmt.Errorf("%w: reading partial data: %v", errFatal, err)
		}
	}
	if err := f.Truncate(off); err != nil {
		f.Close()
		return diskError(err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return diskError(err)
	}
	e := rc.offer.Entries[i]
	rc.f, rc.h, rc.written, rc.flushed = f, h, off, off
	rc.pr.File, rc.pr.FileSize, rc.pr.FileDone = e.Path, e.Size, off
	rc.pr.Done += off
	return nil
}

func (rc *receiver) closeCurrent() {
	if rc.f != nil {
		rc.f.Close()
		rc.f = nil
	}
}

// finish completes entry i: verify, fsync, and move to its final name.
func (rc *receiver) finish(i int, sum []byte) (string, error) {
	e := rc.offer.Entries[i]
	switch {
	case e.IsDir():
		if err := rc.root.MkdirAll(e.Path, 0o755); err != nil {
			return "", fmt.Errorf("create directory: %w", err)
		}
		rc.root.Chmod(e.Path, e.Mode.Perm()|0o700)
		return e.Path, nil
	case e.IsLink():
		if err := rc.mkParent(e.Path); err != nil {
			return "", err
		}
		name := uniqueName(e.Path, rc.exists)
		if err := rc.root.Symlink(e.Link, name); err != nil {
			return "", fmt.Errorf("create symlink: %w", err)
		}
		return name, nil
	}
	f := rc.f
	rc.f = nil
	if f == nil {
		return "", errors.New("no data")
	}
	defer f.Close()
	if e.Size >= 0 && rc.written != e.Size {
		return "", fmt.Errorf("%w: the sender sent %d of the %d bytes it announced (partial data kept; sending again resumes)", errFatal, rc.written, e.Size)
	}
	if !bytes.Equal(sum, rc.h.Sum(nil)) {
		f.Close()
		rc.root.Remove(rc.partName(i))
		return "", fmt.Errorf("%w: SHA-256 mismatch: the data was damaged on the way; nothing was kept", errFatal)
	}
	if err := f.Sync(); err != nil {
		return "", diskError(err)
	}
	if err := f.Close(); err != nil {
		return "", diskError(err)
	}
	if err := rc.mkParent(e.Path); err != nil {
		return "", err
	}
	name := uniqueName(e.Path, rc.exists)
	if err := rc.root.Rename(rc.partName(i), name); err != nil {
		return "", fmt.Errorf("%w: move into place: %v", errFatal, err)
	}
	rc.root.Chmod(name, e.Mode.Perm()&0o777)
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

func (rc *receiver) mkParent(p string) error {
	if dir := path.Dir(p); dir != "." {
		if err := rc.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	return nil
}

func (rc *receiver) exists(name string) bool {
	_, err := rc.root.Lstat(name)
	return !errors.Is(err, fs.ErrNotExist)
}
