// Package files moves files between two peers over one byte stream: the wire
// format, the sender that pipelines many files without a round trip each,
// and the receiver's inbox, which never overwrites, never lets a peer's path
// escape it, verifies SHA-256 before a file gets its final name, and keeps
// partial data so an interrupted transfer resumes where it stopped.
package files

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// Frame types. The sender speaks Offer, Begin, Data, End and Done; the
// receiver answers Accept, Reject or Refuse, then one Result per file.
const (
	frameOffer  byte = 1 // JSON Offer
	frameAccept byte = 2 // JSON acceptMsg
	frameReject byte = 3 // UTF-8 reason
	frameBegin  byte = 4 // uvarint index, uvarint offset
	frameData   byte = 5 // file bytes
	frameEnd    byte = 6 // 32-byte SHA-256 of the whole file (empty for links and dirs)
	frameResult byte = 7 // JSON Result
	frameDone   byte = 8 // no more files
	frameRefuse byte = 9 // JSON refusal: the receiver cannot take anything (e.g. its inbox is read-only)
	// Lanes (lanes.go): file bytes at an offset, on the main stream or an
	// extra lane, and on a lane the receiver's acknowledgement that they
	// are written.
	frameChunk byte = 10 // uvarint index, uvarint offset, file bytes
	frameAck   byte = 11 // uvarint index, uvarint offset, uvarint length
)

// Limits on what a peer may send.
const (
	maxOfferBytes = 32 << 20  // the offer lists every entry
	maxFrameBytes = 256 << 10 // every other frame
	maxEntries    = 1_000_000
	dataChunk     = 128 << 10
)

// Entry is one file, directory or symlink in a transfer. Path is relative,
// slash-separated and checked by the receiver with CleanPath.
type Entry struct {
	Path    string      `json:"path"`
	Size    int64       `json:"size"` // -1: unknown until the end (a stream such as stdin); not resumable
	Mode    fs.FileMode `json:"mode"` // permission bits, plus fs.ModeDir or fs.ModeSymlink
	ModTime time.Time   `json:"mtime"`
	Link    string      `json:"link,omitempty"` // symlink target, relative, inside the sent tree
}

// IsDir and IsLink report the entry's kind.
func (e Entry) IsDir() bool  { return e.Mode&fs.ModeDir != 0 }
func (e Entry) IsLink() bool { return e.Mode&fs.ModeSymlink != 0 }

// Offer is what the sender proposes to send.
type Offer struct {
	V       int     `json:"v"`
	Entries []Entry `json:"entries"`
	// Lanes: the sender can open extra lanes (receivers that do not know
	// them ignore it).
	Lanes bool `json:"lanes,omitempty"`
}

// Files and Bytes count the regular files and their known bytes.
func (o Offer) Files() (n int, bytes int64) {
	for _, e := range o.Entries {
		if !e.IsDir() && !e.IsLink() {
			n++
			if e.Size > 0 {
				bytes += e.Size
			}
		}
	}
	return n, bytes
}

type acceptMsg struct {
	// Have maps entry index to bytes the receiver already holds (a
	// resumable partial file, or the whole file when it was received before).
	Have map[int]int64 `json:"have,omitempty"`
	// Lanes are one-time secrets (hex), one per extra lane the sender may
	// open; given only when the offer asked and the receiver can take lanes.
	Lanes []string `json:"lanes,omitempty"`
}

// Result is the receiver's verdict on one entry.
type Result struct {
	Index   int    `json:"index"`
	Name    string `json:"name,omitempty"`    // where it landed, relative to the inbox
	Error   string `json:"error,omitempty"`   // empty on success
	Code    string `json:"code,omitempty"`    // with Error: what kind of failure (codeDiskFull, ...)
	Warning string `json:"warning,omitempty"` // the entry was skipped on purpose, and why (not an error)
}

// Failure codes a receiver sends, in a Result or a refusal, so that the
// sender can tell its user what happened without reading the text.
const (
	codeInboxUnwritable = "inbox-unwritable"
	codeDiskFull        = "disk-full"
	codeNotPortable     = "not-portable" // a name the receiver (on Windows) cannot take
)

// refusal is a receiver's answer to an offer it cannot take at all.
type refusal struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

var (
	// ErrRejected is returned to a sender whose offer the receiver declined.
	ErrRejected = errors.New("the receiver declined")
	// ErrInboxUnwritable is returned to a sender whose receiver cannot
	// write its inbox (read-only, no permission), and by Inbox.Check.
	ErrInboxUnwritable = errors.New("the receiver cannot write its inbox")
	// ErrDiskFull is returned to a sender whose receiver ran out of space.
	ErrDiskFull = errors.New("the receiver's disk is full")
)

// codeError turns a failure code from the receiver into an error the
// sender can test with errors.Is (ErrInboxUnwritable, ErrDiskFull); msg
// is what it says.
func codeError(code, msg string) error {
	switch code {
	case codeInboxUnwritable:
		return &codedError{ErrInboxUnwritable, msg}
	case codeDiskFull:
		return &codedError{ErrDiskFull, msg}
	case codeNotPortable:
		return &codedError{ErrNotPortable, msg}
	}
	return errors.New(msg)
}

type codedError struct {
	kind error
	msg  string
}

func (e *codedError) Error() string        { return e.msg }
func (e *codedError) Is(target error) bool { return target == e.kind }

type frameWriter struct{ w *bufio.Writer }

func (f frameWriter) write(typ byte, payload []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	if _, err := f.w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err := f.w.Write(payload)
	return err
}

func (f frameWriter) writeJSON(typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return f.write(typ, b)
}

// readFrame reads one frame, refusing payloads over the limit for its type.
func readFrame(r *bufio.Reader, buf []byte) (typ byte, payload []byte, err error) {
	typ, err = r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, fmt.Errorf("frame length: %w", noEOF(err))
	}
	limit := uint64(maxFrameBytes)
	if typ == frameOffer {
		limit = maxOfferBytes
	}
	if typ < frameOffer || typ > frameAck {
		return 0, nil, fmt.Errorf("unknown frame type %d", typ)
	}
	if n > limit {
		return 0, nil, fmt.Errorf("frame of %d bytes is over the %d-byte limit", n, limit)
	}
	if uint64(cap(buf)) >= n {
		payload = buf[:n]
	} else {
		payload = make([]byte, n)
	}
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("frame body: %w", noEOF(err))
	}
	return typ, payload, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeOffer parses and checks an offer from a peer.
// windows: the receiver is on Windows, and takes only names Windows can.
func decodeOffer(b []byte, windows bool) (Offer, error) {
	var o Offer
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("offer: %w", err)
	}
	if o.V != 1 {
		return o, fmt.Errorf("offer version %d not supported", o.V)
	}
	if len(o.Entries) == 0 || len(o.Entries) > maxEntries {
		return o, fmt.Errorf("offer with %d entries", len(o.Entries))
	}
	seen := make(map[string]bool, len(o.Entries))
	for i := range o.Entries {
		e := &o.Entries[i]
		p, err := cleanPath(e.Path, windows)
		if err != nil {
			return o, err
		}
		if seen[p] {
			return o, fmt.Errorf("offer names %q twice", p)
		}
		seen[p] = true
		e.Path = p
		switch {
		case e.IsDir() && e.IsLink(), e.Mode&^(fs.ModeDir|fs.ModeSymlink|fs.ModePerm) != 0:
			return o, fmt.Errorf("%q: unsupported mode %v", p, e.Mode)
		case e.IsLink():
			if err := checkLink(p, e.Link); err != nil {
				return o, err
			}
		case !e.IsDir() && e.Size < -1:
			return o, fmt.Errorf("%q: negative size", p)
		}
	}
	return o, nil
}

func decodeBegin(b []byte) (index int, offset int64, err error) {
	i, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, errors.New("bad begin frame")
	}
	off, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) || i > maxEntries || off > 1<<62 {
		return 0, 0, errors.New("bad begin frame")
	}
	return int(i), int64(off), nil
}

// decodeChunk parses a chunk frame: entry index, offset, file bytes.
func decodeChunk(b []byte) (index int, offset int64, data []byte, err error) {
	i, n := binary.Uvarint(b)
	if n <= 0 || i > maxEntries {
		return 0, 0, nil, errors.New("bad chunk frame")
	}
	off, m := binary.Uvarint(b[n:])
	if m <= 0 || off > 1<<62 {
		return 0, 0, nil, errors.New("bad chunk frame")
	}
	return int(i), int64(off), b[n+m:], nil
}

// appendChunkHeader appends a chunk frame's header (index, offset) to b.
func appendChunkHeader(b []byte, index int, offset int64) []byte {
	b = binary.AppendUvarint(b, uint64(index))
	return binary.AppendUvarint(b, uint64(offset))
}

// decodeAck parses an acknowledgement: entry index, offset, length.
func decodeAck(b []byte) (index int, offset int64, n int, err error) {
	i, k := binary.Uvarint(b)
	if k <= 0 || i > maxEntries {
		return 0, 0, 0, errors.New("bad ack frame")
	}
	off, m := binary.Uvarint(b[k:])
	if m <= 0 || off > 1<<62 {
		return 0, 0, 0, errors.New("bad ack frame")
	}
	l, q := binary.Uvarint(b[k+m:])
	if q <= 0 || k+m+q != len(b) || l > maxFrameBytes {
		return 0, 0, 0, errors.New("bad ack frame")
	}
	return int(i), int64(off), int(l), nil
}

func encodeAck(index int, offset int64, n int) []byte {
	b := appendChunkHeader(nil, index, offset)
	return binary.AppendUvarint(b, uint64(n))
}

func encodeBegin(index int, offset int64) []byte {
	b := binary.AppendUvarint(nil, uint64(index))
	return binary.AppendUvarint(b, uint64(offset))
}
