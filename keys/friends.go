package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Permissions say what a friend (or a ticket holder) may do.
type Permissions struct {
	Shell    bool
	Files    bool
	AllPorts bool
	Ports    []int // sorted, no duplicates
}

// AllowsPort reports whether the permissions include TCP port p.
func (p Permissions) AllowsPort(port int) bool {
	if p.AllPorts {
		return true
	}
	for _, q := range p.Ports {
		if q == port {
			return true
		}
	}
	return false
}

// String lists the permissions as --allow words: "shell,files,port=22".
func (p Permissions) String() string {
	var w []string
	if p.Shell {
		w = append(w, "shell")
	}
	if p.Files {
		w = append(w, "files")
	}
	if p.AllPorts {
		w = append(w, "port=*")
	}
	for _, port := range p.Ports {
		w = append(w, "port="+strconv.Itoa(port))
	}
	if len(w) == 0 {
		return "nothing"
	}
	return strings.Join(w, ",")
}

// options renders the permissions as authorized_keys options.
func (p Permissions) options() []string {
	var o []string
	if p.Shell {
		o = append(o, "permit-shell")
	}
	if p.Files {
		o = append(o, "permit-files")
	}
	if p.AllPorts {
		o = append(o, "permit-port=*")
	}
	for _, port := range p.Ports {
		o = append(o, "permit-port="+strconv.Itoa(port))
	}
	return o
}

// ParsePermission adds one --allow word ("shell", "files", "port=8000",
// "port=*", or several joined by commas) to p.
func (p *Permissions) ParsePermission(word string) error {
	for _, w := range strings.Split(word, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "shell":
			p.Shell = true
		case w == "files":
			p.Files = true
		case w == "port=*":
			p.AllPorts = true
		case strings.HasPrefix(w, "port="):
			port, err := ParsePort(strings.TrimPrefix(w, "port="))
			if err != nil {
				return err
			}
			p.addPort(port)
		default:
			return fmt.Errorf("unknown permission %q (want shell, files, port=N or port=*)", w)
		}
	}
	return nil
}

func (p *Permissions) addPort(port int) {
	if p.AllowsPort(port) && !p.AllPorts {
		return
	}
	p.Ports = append(p.Ports, port)
	sort.Ints(p.Ports)
}

// ParsePort parses a TCP port number 1..65535.
func ParsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q: want a number from 1 to 65535", s)
	}
	return n, nil
}

// Friend is one line of the friends file.
type Friend struct {
	Name    string
	Key     ssh.PublicKey
	Perms   Permissions
	Comment string
}

// ID returns the friend's peer ID.
func (f Friend) ID() PeerID { return IDOf(f.Key) }

// Line renders the friend as an authorized_keys line.
func (f Friend) Line() string {
	opts := append([]string{`name="` + f.Name + `"`}, f.Perms.options()...)
	line := strings.Join(opts, ",") + " " + FormatKey(f.Key)
	if f.Comment != "" {
		line += " " + f.Comment
	}
	return line
}

// ValidName checks a friend name: 1-32 of a-z A-Z 0-9 . _ -, not starting
// with the ticket prefix, so that "name:port" and tickets stay unambiguous.
func ValidName(name string) error {
	if name == "" || len(name) > 32 {
		return fmt.Errorf("invalid friend name %q: use 1 to 32 letters, digits, '.', '_' or '-'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid friend name %q: use 1 to 32 letters, digits, '.', '_' or '-'", name)
		}
	}
	if strings.HasPrefix(strings.ToLower(name), TicketPrefix) {
		return fmt.Errorf("invalid friend name %q: names may not start with %q (that is how tickets start)", name, TicketPrefix)
	}
	return nil
}

// Friends is the parsed friends file. Lines that are not entries (comments,
// blank lines) are kept so that a rewrite leaves the file as the user wrote it.
type Friends struct {
	lines   []string // raw lines
	entries []entry
}

type entry struct {
	line   int // index into lines
	friend Friend
}

// ParseFriends parses a friends file: authorized_keys lines whose options
// carry name="..." and permit-shell, permit-files, permit-port=N|*.
func ParseFriends(data []byte) (*Friends, error) {
	f := &Friends{}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.TrimSuffix(text, "\n")
	if text != "" {
		f.lines = strings.Split(text, "\n")
	}
	names := map[string]bool{}
	ids := map[PeerID]bool{}
	for i, raw := range f.lines {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fr, err := parseFriendLine(line)
		if err != nil {
			return nil, fmt.Errorf("friends file line %d: %w", i+1, err)
		}
		if names[strings.ToLower(fr.Name)] {
			return nil, fmt.Errorf("friends file line %d: name %q is used twice", i+1, fr.Name)
		}
		if ids[fr.ID()] {
			return nil, fmt.Errorf("friends file line %d: key of %q is listed twice", i+1, fr.Name)
		}
		names[strings.ToLower(fr.Name)] = true
		ids[fr.ID()] = true
		f.entries = append(f.entries, entry{line: i, friend: fr})
	}
	return f, nil
}

func parseFriendLine(line string) (Friend, error) {
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Friend{}, fmt.Errorf("not an authorized_keys line: %w", err)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return Friend{}, errors.New("more than one key on a line")
	}
	fr := Friend{Key: pub, Comment: comment}
	for _, opt := range options {
		k, v, hasV := strings.Cut(opt, "=")
		v = strings.Trim(v, `"`)
		switch {
		case k == "name" && hasV:
			fr.Name = v
		case k == "permit-shell" && !hasV:
			fr.Perms.Shell = true
		case k == "permit-files" && !hasV:
			fr.Perms.Files = true
		case k == "permit-port" && hasV:
			if err := fr.Perms.ParsePermission("port=" + v); err != nil {
				return Friend{}, err
			}
		default:
			return Friend{}, fmt.Errorf("unknown option %q (kin knows name=, permit-shell, permit-files, permit-port=)", opt)
		}
	}
	if fr.Name == "" {
		return Friend{}, errors.New(`missing name="..." option`)
	}
	if err := ValidName(fr.Name); err != nil {
		return Friend{}, err
	}
	return fr, nil
}

// ReadFriends reads the friends file at path. A missing file is an empty list.
func ReadFriends(path string) (*Friends, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Friends{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read friends: %w", err)
	}
	f, err := ParseFriends(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// List returns the friends in file order.
func (f *Friends) List() []Friend {
	out := make([]Friend, len(f.entries))
	for i, e := range f.entries {
		out[i] = e.friend
	}
	return out
}

// ByName finds a friend by name (case-insensitive).
func (f *Friends) ByName(name string) (Friend, bool) {
	for _, e := range f.entries {
		if strings.EqualFold(e.friend.Name, name) {
			return e.friend, true
		}
	}
	return Friend{}, false
}

// ByKey finds the friend whose key is pub.
func (f *Friends) ByKey(pub ssh.PublicKey) (Friend, bool) {
	want := pub.Marshal()
	for _, e := range f.entries {
		if bytes.Equal(e.friend.Key.Marshal(), want) {
			return e.friend, true
		}
	}
	return Friend{}, false
}

// Add appends a friend. The name and key must both be new.
func (f *Friends) Add(fr Friend) error {
	if err := ValidName(fr.Name); err != nil {
		return err
	}
	if _, ok := f.ByName(fr.Name); ok {
		return fmt.Errorf("there is already a friend named %q (remove it first with `kin friends rm %s`)", fr.Name, fr.Name)
	}
	if old, ok := f.ByKey(fr.Key); ok {
		return fmt.Errorf("that key is already your friend %q", old.Name)
	}
	f.lines = append(f.lines, fr.Line())
	f.entries = append(f.entries, entry{line: len(f.lines) - 1, friend: fr})
	return nil
}

// Remove deletes the friend with that name.
func (f *Friends) Remove(name string) error {
	for i, e := range f.entries {
		if strings.EqualFold(e.friend.Name, name) {
			f.lines = append(f.lines[:e.line], f.lines[e.line+1:]...)
			f.entries = append(f.entries[:i], f.entries[i+1:]...)
			for j := range f.entries {
				if f.entries[j].line > e.line {
					f.entries[j].line--
				}
			}
			return nil
		}
	}
	return fmt.Errorf("no friend named %q (see `kin friends ls`)", name)
}

// Marshal renders the file, keeping comments and blank lines.
func (f *Friends) Marshal() []byte {
	if len(f.lines) == 0 {
		return nil
	}
	return []byte(strings.Join(f.lines, "\n") + "\n")
}

// WriteFile replaces the friends file at path atomically.
func (f *Friends) WriteFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create friends dir: %w", err)
	}
	if err := WriteFileAtomic(path, f.Marshal(), 0o600); err != nil {
		return fmt.Errorf("write friends: %w", err)
	}
	return nil
}
