package files

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Plan is what a sender will send: the offer and where each entry's bytes
// come from.
type Plan struct {
	Offer    Offer
	Warnings []string // e.g. symlinks that point outside what is sent, skipped
	// NotPortable are the local paths sent under names Windows cannot take
	// (see Portable): a receiver on Windows refuses the offer.
	NotPortable []string
	// Renamed are the local paths ScanPortable sent under another name,
	// with that name.
	Renamed [][2]string
	sources []string // local path per entry ("" for a stream)
	stream  io.Reader
}

// Scan builds a plan for local paths: each file is sent under its base
// name, each directory with everything under it. Symlinks inside a
// directory are sent as symlinks when they point inside it and skipped with
// a warning otherwise. A path that does not exist or cannot be read is an
// error, before anything is sent.
func Scan(paths ...string) (*Plan, error) { return scan(false, paths) }

// ScanPortable is Scan that sends every name Windows cannot take under
// PortableName (e.g. "a:b?" as "a_b_"), so that any receiver takes it.
func ScanPortable(paths ...string) (*Plan, error) { return scan(true, paths) }

func scan(rename bool, paths []string) (*Plan, error) {
	p := &Plan{Offer: Offer{V: 1}}
	given := map[string]string{} // name in the offer -> local path
	named := func(local, name string) error {
		if other, ok := given[name]; ok && rename {
			return fmt.Errorf("cannot send %s: renamed it would be %s, as %s is", local, name, other)
		}
		given[name] = local
		return nil
	}
	for _, root := range paths {
		st, err := os.Stat(root) // follows a symlink given by name, like cp
		if err != nil {
			return nil, fmt.Errorf("cannot send %s: %w", root, err)
		}
		base := filepath.Base(filepath.Clean(root))
		if rename && base != "/" {
			if b := PortableName(base); b != base {
				p.Renamed = append(p.Renamed, [2]string{root, b})
				base = b
			}
		}
		if _, err := CleanPath(base); err != nil || base == "/" {
			if perr := Portable(base); perr != nil {
				return nil, fmt.Errorf("cannot send %s: its name %w", root, perr)
			}
			return nil, fmt.Errorf("cannot send %s: a name is needed (give the directory itself, or its contents)", root)
		}
		if Portable(base) != nil {
			p.NotPortable = append(p.NotPortable, root)
		}
		if err := named(root, base); err != nil {
			return nil, err
		}
		if !st.IsDir() {
			if !st.Mode().IsRegular() {
				// Never opened: opening a FIFO waits for a writer.
				return nil, fmt.Errorf("cannot send %s: it is %s, not a file (to send what it produces, pipe it in: kin send - [FRIEND] --name NAME < %s)", root, kindOf(st.Mode()), root)
			}
			if err := p.addFile(root, base, st); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(root, func(local string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("cannot send %s: %w", local, err)
			}
			rel, _ := filepath.Rel(root, local)
			name := base
			if rel != "." {
				rel = filepath.ToSlash(rel)
				if rename {
					if r := PortableName(rel); path.Base(r) != path.Base(rel) {
						p.Renamed = append(p.Renamed, [2]string{local, base + "/" + r})
					}
					rel = PortableName(rel)
				}
				name = base + "/" + rel
				if _, err := CleanPath(name); err != nil {
					why := "its name cannot be sent"
					if perr := Portable(path.Base(name)); perr != nil {
						why = "its name " + perr.Error()
					}
					p.Warnings = append(p.Warnings, fmt.Sprintf("skipped %s: %s", local, why))
					if d.IsDir() {
						return filepath.SkipDir
					}
					return nil
				}
				if Portable(path.Base(name)) != nil {
					p.NotPortable = append(p.NotPortable, local)
				}
				if err := named(local, name); err != nil {
					return err
				}
			}
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("cannot send %s: %w", local, err)
			}
			switch {
			case d.IsDir():
				p.add(Entry{Path: name, Mode: fs.ModeDir | info.Mode().Perm(), ModTime: info.ModTime()}, local)
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(local)
				if err != nil {
					return fmt.Errorf("cannot send %s: %w", local, err)
				}
				target = filepath.ToSlash(target)
				if rename {
					target = PortableName(target) // the names it leads to are renamed too
				}
				if err := checkLink(name, target); err != nil {
					p.Warnings = append(p.Warnings, fmt.Sprintf("skipped symlink %s -> %s: it points outside what is sent", local, target))
					return nil
				}
				p.add(Entry{Path: name, Mode: fs.ModeSymlink | 0o777, ModTime: info.ModTime(), Link: target}, local)
			case info.Mode().IsRegular():
				return p.addFile(local, name, info)
			default:
				p.Warnings = append(p.Warnings, fmt.Sprintf("skipped %s: it is %s, not a file", local, kindOf(info.Mode())))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	p.confineLinks()
	return p, nil
}

// kindOf names what a non-regular file is, for messages.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "not a regular file"
}

// addFile adds a regular file. One whose size reads 0 but that has data
// (such as /proc/version) is sent as a stream, to its end.
func (p *Plan) addFile(local, name string, info fs.FileInfo) error {
	f, err := os.Open(local)
	if err != nil {
		return fmt.Errorf("cannot send %s: %w", local, err)
	}
	size := info.Size()
	if size == 0 {
		var b [1]byte
		if n, _ := f.Read(b[:]); n > 0 {
			size = -1
		}
	}
	f.Close()
	p.add(Entry{Path: name, Size: size, Mode: info.Mode().Perm(), ModTime: info.ModTime()}, local)
	return nil
}

// confineLinks drops, with a warning, the symlinks that lead outside what
// is sent once the other links sent are followed (like d -> . and then
// e -> d/..), as the receiver would refuse them.
func (p *Plan) confineLinks() {
	var reqs []linkReq
	var idx []int
	exists := map[string]bool{}
	for i, e := range p.Offer.Entries {
		exists[e.Path] = true
		if e.IsLink() {
			reqs = append(reqs, linkReq{Name: e.Path, Target: e.Link})
			idx = append(idx, i)
		}
	}
	if len(reqs) == 0 {
		return
	}
	refused := confineLinks(reqs, func(name string) (string, bool, bool) {
		return "", false, exists[name] // the links themselves are in reqs
	})
	if len(refused) == 0 {
		return
	}
	drop := map[int]bool{}
	for j := range reqs {
		if why, ok := refused[j]; ok {
			drop[idx[j]] = true
			p.Warnings = append(p.Warnings, fmt.Sprintf("skipped symlink %s -> %s: %s", p.sources[idx[j]], reqs[j].Target, why))
		}
	}
	var entries []Entry
	var sources []string
	for i, e := range p.Offer.Entries {
		if !drop[i] {
			entries = append(entries, e)
			sources = append(sources, p.sources[i])
		}
	}
	p.Offer.Entries, p.sources = entries, sources
}

func (p *Plan) add(e Entry, local string) {
	p.Offer.Entries = append(p.Offer.Entries, e)
	p.sources = append(p.sources, local)
}

// StreamPlan sends r (e.g. stdin) as one file named name, of unknown size.
// A stream cannot be resumed.
func StreamPlan(name string, r io.Reader) (*Plan, error) {
	if _, err := CleanPath(name); err != nil || strings.Contains(name, "/") {
		if perr := Portable(name); perr != nil && !strings.Contains(name, "/") {
			return nil, fmt.Errorf("invalid name for the stream: %w", perr)
		}
		return nil, fmt.Errorf("invalid name %q for the stream", name)
	}
	var np []string
	if Portable(name) != nil {
		np = []string{name}
	}
	return &Plan{
		NotPortable: np,
		Offer:       Offer{V: 1, Entries: []Entry{{Path: name, Size: -1, Mode: 0o644, ModTime: time.Now()}}},
		sources:     []string{""},
		stream:      r,
	}, nil
}

// Progress reports how far a transfer is.
type Progress struct {
	File       string
	FileDone   int64
	FileSize   int64 // -1 when unknown
	Done       int64 // bytes of all files, including what the receiver already had
	Moved      int64 // bytes that crossed the wire in this transfer (Done without what was already there)
	Total      int64
	FilesDone  int
	FilesTotal int
	Lanes      int // lanes carrying the bytes now (the main stream, while it does, counts as one; 0 means 1)
}

// Stats summarise a finished send.
type Stats struct {
	Sent    int64 // file bytes that crossed the wire
	Resumed int64 // file bytes the receiver already had
	Results []Result
	// Warnings are entries the receiver skipped on purpose, and why (for
	// example a symlink that would lead outside what was sent).
	Warnings []string
	// Lanes is the most lanes that carried the transfer at once (1: the
	// main stream alone).
	Lanes int
}

// Send offers plan over rw and, once the receiver accepts, streams every
// entry without waiting for the receiver between files; it returns when the
// receiver has answered for every entry. progress may be nil.
func Send(ctx context.Context, rw io.ReadWriter, plan *Plan, progress func(Progress)) (Stats, error) {
	return SendWith(ctx, rw, plan, LaneOptions{}, progress)
}

// SendWith is Send that also spreads big files over extra lanes when the
// receiver takes them (lanes.go).
func SendWith(ctx context.Context, rw io.ReadWriter, plan *Plan, opts LaneOptions, progress func(Progress)) (st Stats, _ error) {
	st.Lanes = 1
	w := frameWriter{bufio.NewWriterSize(rw, 256<<10)}
	r := bufio.NewReaderSize(rw, 64<<10)
	offer := plan.Offer
	offer.Lanes = opts.Lanes != nil && opts.Force != 1
	if err := w.writeJSON(frameOffer, offer); err != nil {
		return st, fmt.Errorf("send offer: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return st, fmt.Errorf("send offer: %w", err)
	}
	typ, payload, err := readFrame(r, nil)
	if err != nil {
		return st, fmt.Errorf("waiting for the receiver: %w", err)
	}
	var acc acceptMsg
	switch typ {
	case frameReject:
		return st, fmt.Errorf("%w: %s", ErrRejected, payload)
	case frameRefuse:
		var why refusal
		if err := json.Unmarshal(payload, &why); err != nil {
			return st, fmt.Errorf("receiver's answer: %w", err)
		}
		switch why.Code {
		case codeInboxUnwritable:
			return st, codeError(why.Code, fmt.Sprintf("%v (%s)", ErrInboxUnwritable, why.Reason))
		case codeNotPortable:
			return st, codeError(why.Code, "the receiver is on Windows: "+why.Reason)
		}
		return st, codeError(why.Code, "the receiver refused: "+why.Reason)
	case frameAccept:
		if err := json.Unmarshal(payload, &acc); err != nil {
			return st, fmt.Errorf("receiver's answer: %w", err)
		}
	default:
		return st, fmt.Errorf("receiver answered with frame type %d", typ)
	}
	var ls *laneSet
	if opts.Lanes != nil && len(acc.Lanes) > 0 && opts.Force != 1 {
		tokens, err := parseTokens(acc.Lanes)
		if err != nil {
			return st, err
		}
		ls = newLaneSet(ctx, opts, tokens)
		defer func() {
			ls.close()
			st.Lanes = int(ls.mostUsed.Load())
		}()
	}

	// Results come back while we send.
	entries := plan.Offer.Entries
	type resultsOrErr struct {
		res []Result
		err error
	}
	resc := make(chan resultsOrErr, 1)
	failed := make(chan Result, 1)
	go func() {
		var res []Result
		for len(res) < len(entries) {
			typ, payload, err := readFrame(r, nil)
			if err != nil {
				err = fmt.Errorf("receiver: %w", noEOF(err))
				if ls != nil {
					ls.fail(err) // nothing more will be acknowledged
				}
				resc <- resultsOrErr{res, err}
				return
			}
			var x Result
			if typ != frameResult || json.Unmarshal(payload, &x) != nil || x.Index < 0 || x.Index >= len(entries) {
				resc <- resultsOrErr{res, errors.New("receiver sent a malformed result")}
				return
			}
			res = append(res, x)
			if x.Error != "" {
				if ls != nil {
					ls.fail(resultError(entries, x))
				}
				select {
				case failed <- x:
				default:
				}
			}
		}
		resc <- resultsOrErr{res, nil}
	}()

	nfiles, total := plan.Offer.Files()
	pr := Progress{Total: total, FilesTotal: nfiles}
	report := func() {
		if progress != nil {
			if ls != nil {
				pr.Lanes = ls.lanes()
			}
			progress(pr)
		}
	}
	buf := make([]byte, dataChunk)
	sendErr := func() error {
		for i, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			have, has := acc.Have[i]
			if e.IsDir() || e.IsLink() {
				if err := w.write(frameBegin, encodeBegin(i, 0)); err != nil {
					return err
				}
				if err := w.write(frameEnd, nil); err != nil {
					return err
				}
				continue
			}
			pr.File, pr.FileSize, pr.FileDone = e.Path, e.Size, 0
			if e.Size >= 0 && (have < 0 || have > e.Size) {
				return fmt.Errorf("receiver claims %d bytes of %s", have, e.Path)
			}
			if e.Size >= 0 && has && have == e.Size {
				// The receiver has the whole file already.
				st.Resumed += have
				pr.Done += have
				pr.FilesDone++
				report()
				continue
			}
			if e.Size < 0 {
				have = 0
			}
			if err := w.write(frameBegin, encodeBegin(i, have)); err != nil {
				return err
			}
			st.Resumed += have
			pr.Done += have
			pr.FileDone = have
			sent := func(n int) {
				st.Sent += int64(n)
				pr.Moved += int64(n)
				pr.FileDone += int64(n)
				pr.Done += int64(n)
				report()
			}
			var sum []byte
			var err error
			if ls != nil && e.Size-have >= laneMinBytes && plan.sources[i] != "" {
				sum, err = sendChunks(ctx, w, plan, i, have, ls, buf, sent)
			} else {
				sum, err = sendData(ctx, w, plan, i, have, buf, sent)
			}
			if err != nil {
				return err
			}
			if err := w.write(frameEnd, sum); err != nil {
				return err
			}
			pr.FilesDone++
			report()
			select {
			case x := <-failed:
				return resultError(entries, x)
			default:
			}
		}
		if err := w.write(frameDone, nil); err != nil {
			return err
		}
		return w.w.Flush()
	}()
	if sendErr != nil {
		// The receiver may have said why it stopped reading.
		select {
		case x := <-failed:
			return st, resultError(entries, x)
		case <-time.After(200 * time.Millisecond):
		}
		return st, fmt.Errorf("send: %w", sendErr)
	}
	var got resultsOrErr
	select {
	case got = <-resc:
	case <-ctx.Done():
		return st, ctx.Err()
	}
	st.Results = got.res
	if got.err != nil {
		return st, got.err
	}
	for _, x := range got.res {
		if x.Warning != "" && x.Error == "" {
			st.Warnings = append(st.Warnings, x.Warning)
		}
	}
	for _, x := range got.res {
		if x.Error != "" {
			return st, resultError(entries, x)
		}
	}
	return st, nil
}

// resultError is the error for a failed result; its code, if any, makes
// it match ErrInboxUnwritable or ErrDiskFull.
func resultError(entries []Entry, x Result) error {
	msg := fmt.Sprintf("%s: %s", path.Clean(entries[x.Index].Path), x.Error)
	if x.Code != "" {
		return fmt.Errorf("receiver: %w", codeError(x.Code, msg))
	}
	return fmt.Errorf("receiver: %s", msg)
}

// sendChunks sends entry i from offset have as chunks on the main stream
// and the extra lanes, and returns the SHA-256 of the whole file once every
// chunk is acknowledged.
func sendChunks(ctx context.Context, w frameWriter, plan *Plan, i int, have int64, ls *laneSet, buf []byte, sent func(int)) ([]byte, error) {
	local := plan.sources[i]
	f, err := os.Open(local)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", local, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, have); err != nil {
		return nil, fmt.Errorf("read %s: %w", local, err)
	}
	// The receiver takes chunks of a file once the main stream began it.
	if err := w.w.Flush(); err != nil {
		return nil, err
	}
	ls.start(&fileJob{index: i, f: f, next: have, end: plan.Offer.Entries[i].Size, h: h, progress: sent})
	defer ls.stop()
	hdr := make([]byte, 0, 2*binary.MaxVarintLen64)
	for {
		_, off, data, ok, err := ls.take(nil, buf, func() { w.w.Flush() })
		if err != nil {
			return nil, err
		}
		if !ok {
			return h.Sum(nil), nil
		}
		if err := writeChunk(w, hdr[:0], i, off, data); err != nil {
			return nil, err
		}
	}
}

// sendData streams entry i from offset have as data frames and returns the
// SHA-256 of the whole file (the first have bytes are hashed locally).
func sendData(ctx context.Context, w frameWriter, plan *Plan, i int, have int64, buf []byte, sent func(int)) ([]byte, error) {
	h := sha256.New()
	src := plan.stream
	if local := plan.sources[i]; local != "" {
		f, err := os.Open(local)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", local, err)
		}
		defer f.Close()
		if _, err := io.CopyN(h, f, have); err != nil {
			return nil, fmt.Errorf("read %s: %w", local, err)
		}
		src = f // a size that read 0 (/proc files): to the end
		if size := plan.Offer.Entries[i].Size; size >= 0 {
			src = io.LimitReader(f, size-have)
		}
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if err := w.write(frameData, buf[:n]); err != nil {
				return nil, err
			}
			sent(n)
		}
		if rerr == io.EOF {
			return h.Sum(nil), nil
		}
		if rerr != nil {
			return nil, fmt.Errorf("read %s: %w", plan.Offer.Entries[i].Path, rerr)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}
