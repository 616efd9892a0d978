package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Permissions say what a friend (or a ticket holder) may do.
type Permissions struct {
	Shell    bool
	Files    bool
	AllPorts bool  // port=*: every port, TCP and UDP
	Ports    []int // TCP ports: sorted, no duplicates
	UDPPorts []int // UDP ports (port=N/udp): sorted, no duplicates
}

// AllowsPort reports whether the permissions include TCP port p.
func (p Permissions) AllowsPort(port int) bool {
	return p.AllPorts || slices.Contains(p.Ports, port)
}

// AllowsUDPPort reports whether the permissions include UDP port p.
func (p Permissions) AllowsUDPPort(port int) bool {
	return p.AllPorts || slices.Contains(p.UDPPorts, port)
}

// String lists the permissions as --allow words:
// "shell,files,port=22,port=30000/udp".
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
	for _, port := range p.UDPPorts {
		w = append(w, "port="+strconv.Itoa(port)+"/udp")
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
	for _, port := range p.UDPPorts {
		o = append(o, "permit-port="+strconv.Itoa(port)+"/udp")
	}
	return o
}

// ParsePermission adds one --allow word ("shell", "files", "port=8000",
// "port=30000/udp", "port=*", or several joined by commas) to p.
// "port=N/tcp" is the same as "port=N".
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
			port, udp, err := ParsePortProto(strings.TrimPrefix(w, "port="))
			if err != nil {
				return err
			}
			if udp {
				p.UDPPorts = addPort(p.UDPPorts, port)
			} else {
				p.Ports = addPort(p.Ports, port)
			}
		default:
			return fmt.Errorf("unknown permission %q (want shell, files, port=N, port=N/udp or port=*)", w)
		}
	}
	return nil
}

// Grant adds the permissions in d to p.
func (p *Permissions) Grant(d Permissions) {
	p.Shell = p.Shell || d.Shell
	p.Files = p.Files || d.Files
	p.AllPorts = p.AllPorts || d.AllPorts
	for _, port := range d.Ports {
		p.Ports = addPort(p.Ports, port)
	}
	for _, port := range d.UDPPorts {
		p.UDPPorts = addPort(p.UDPPorts, port)
	}
}

// Revoke takes the permissions in d away from p. port=* in d takes every
// port away, TCP and UDP. A single port cannot be taken out of port=*:
// that is an error that leaves p as it was.
func (p *Permissions) Revoke(d Permissions) error {
	if !d.AllPorts && p.AllPorts {
		if len(d.Ports) > 0 {
			return fmt.Errorf("port=%d cannot be taken out of port=* (every port)", d.Ports[0])
		}
		if len(d.UDPPorts) > 0 {
			return fmt.Errorf("port=%d/udp cannot be taken out of port=* (every port, TCP and UDP)", d.UDPPorts[0])
		}
	}
	if d.Shell {
		p.Shell = false
	}
	if d.Files {
		p.Files = false
	}
	if d.AllPorts {
		p.AllPorts = false
		p.Ports = nil
		p.UDPPorts = nil
	}
	p.Ports = without(p.Ports, d.Ports)
	p.UDPPorts = without(p.UDPPorts, d.UDPPorts)
	return nil
}

// without returns the ports in list that are not in drop.
func without(list, drop []int) []int {
	var kept []int
	for _, q := range list {
		if !slices.Contains(drop, q) {
			kept = append(kept, q)
		}
	}
	return kept
}

// addPort adds port to a sorted list without duplicates.
func addPort(list []int, port int) []int {
	if slices.Contains(list, port) {
		return list
	}
	list = append(list, port)
	sort.Ints(list)
	return list
}

// ParsePort parses a TCP port number 1..65535.
func ParsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q: want a number from 1 to 65535", s)
	}
	return n, nil
}

// ParsePortProto parses a port with an optional protocol, as docker and
// firewalls write it: "3000" and "3000/tcp" are TCP, "30000/udp" is UDP.
func ParsePortProto(s string) (port int, udp bool, err error) {
	num, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		switch strings.ToLower(proto) {
		case "udp":
			udp = true
		case "tcp":
		default:
			return 0, false, fmt.Errorf("invalid port %q: the protocol after / is tcp or udp", s)
		}
	}
	port, err = ParsePort(num)
	if err != nil {
		return 0, false, fmt.Errorf("invalid port %q: want a number from 1 to 65535, then /udp for UDP", s)
	}
	return port, udp, nil
}

// FormatPort writes a port as ParsePortProto reads it: "3000" or "30000/udp".
func FormatPort(port int, udp bool) string {
	if udp {
		return strconv.Itoa(port) + "/udp"
	}
	return strconv.Itoa(port)
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
	line := strings.Join(f.lineOptions(), ",") + " " + FormatKey(f.Key)
	if f.Comment != "" {
		line += " " + f.Comment
	}
	return line
}

// lineOptions are the friend's authorized_keys options: name, then permissions.
func (f Friend) lineOptions() []string {
	return append([]string{`name="` + f.Name + `"`}, f.Perms.options()...)
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

// Friends is the parsed friends file. Every line is kept as written, so a
// rewrite leaves comments, blank lines and lines kin skipped untouched.
// A *Friends shared between goroutines must not be modified.
type Friends struct {
	lines []fline
}

// fline is one line of the file and what it means.
type fline struct {
	raw    string  // as in the file, without the "\n" (a "\r" stays)
	friend *Friend // nil: not an entry (blank, comment, or skipped)
	key    string  // friend.Key.Marshal(), for ByKey
	err    error   // why the line was skipped
	name   string  // the name= option of a skipped line, if it has one
}

// LineError is a line of the friends file that kin skipped.
type LineError struct {
	Line int    // 1-based
	Name string // the line's name="..." option if it could be read, else ""
	Err  error
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e LineError) Unwrap() error { return e.Err }

// ParseFriends parses a friends file: authorized_keys lines whose options
// carry name="..." and permit-shell, permit-files, permit-port=N|N/udp|*
// (TCP lines are written as before, so older kin still reads them; a
// permit-port=N/udp option makes older kin skip that line).
// As OpenSSH does with authorized_keys, a line that does not parse is
// skipped (returned in the []LineError) and every other line applies. A
// line that repeats an earlier line's name or key is skipped too, so the
// first line for a key is the one that counts.
func ParseFriends(data []byte) (*Friends, []LineError) {
	text := strings.TrimSuffix(string(data), "\n")
	var raw []string
	if text != "" {
		raw = strings.Split(text, "\n")
	}
	f := &Friends{lines: make([]fline, len(raw))}
	for i, r := range raw {
		f.lines[i].raw = r
	}
	f.parse()
	return f, f.Skipped()
}

// parse (re)computes the meaning of every line from its text.
func (f *Friends) parse() {
	names := map[string]int{} // lower-case name -> 1-based line
	ids := map[string]int{}   // marshalled key -> 1-based line
	for i := range f.lines {
		l := &f.lines[i]
		*l = fline{raw: l.raw}
		line := strings.TrimSpace(l.raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fr, err := parseFriendLine(line)
		if err == nil {
			if n, dup := names[strings.ToLower(fr.Name)]; dup {
				err = fmt.Errorf("name %q is already used on line %d", fr.Name, n)
			} else if n, dup := ids[string(fr.Key.Marshal())]; dup {
				err = fmt.Errorf("the key of %q is already listed on line %d", fr.Name, n)
			}
		}
		if err != nil {
			l.err = err
			l.name = nameOption(line)
			continue
		}
		l.friend = &fr
		l.key = string(fr.Key.Marshal())
		names[strings.ToLower(fr.Name)] = i + 1
		ids[l.key] = i + 1
	}
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

// splitOptions splits a trimmed authorized_keys line at the first blank
// outside double quotes (as OpenSSH reads options): the options field and
// the rest, from that blank on. ok is false for a line with one field.
func splitOptions(line string) (opts, rest string, ok bool) {
	inQuote := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\\' && inQuote && i+1 < len(line):
			i++
		case c == '"':
			inQuote = !inQuote
		case (c == ' ' || c == '\t') && !inQuote:
			return line[:i], line[i:], true
		}
	}
	return "", line, false
}

// nameOption digs the name="..." option out of a line that did not parse,
// so that the line can be named in warnings and removed by name. It
// returns "" when there is no valid name to be found (a line that starts
// with its key type has no options, and so no name).
func nameOption(line string) string {
	opts, _, ok := splitOptions(line)
	if !ok {
		return ""
	}
	for _, o := range splitComma(opts) {
		if v, found := strings.CutPrefix(o, "name="); found {
			v = strings.Trim(v, `"`)
			if ValidName(v) == nil {
				return v
			}
		}
	}
	return ""
}

// splitComma splits an options field at the commas outside double quotes.
func splitComma(opts string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(opts); i++ {
		switch opts[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, opts[start:i])
				start = i + 1
			}
		}
	}
	return append(out, opts[start:])
}

// ReadFriends reads the friends file at path. A missing file is an empty
// list. The error is for a file that cannot be read; lines that do not
// parse are skipped and returned in the []LineError.
func ReadFriends(path string) (*Friends, []LineError, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Friends{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read friends: %w", err)
	}
	f, skipped := ParseFriends(data)
	return f, skipped, nil
}

// Skipped returns the lines that were skipped because they do not parse.
func (f *Friends) Skipped() []LineError {
	var out []LineError
	for i, l := range f.lines {
		if l.err != nil {
			out = append(out, LineError{Line: i + 1, Name: l.name, Err: l.err})
		}
	}
	return out
}

// List returns the friends in file order.
func (f *Friends) List() []Friend {
	var out []Friend
	for _, l := range f.lines {
		if l.friend != nil {
			out = append(out, *l.friend)
		}
	}
	return out
}

// ByName finds a friend by name (case-insensitive).
func (f *Friends) ByName(name string) (Friend, bool) {
	for _, l := range f.lines {
		if l.friend != nil && strings.EqualFold(l.friend.Name, name) {
			return *l.friend, true
		}
	}
	return Friend{}, false
}

// ByKey finds the friend whose key is pub.
func (f *Friends) ByKey(pub ssh.PublicKey) (Friend, bool) {
	want := string(pub.Marshal())
	for _, l := range f.lines {
		if l.friend != nil && l.key == want {
			return *l.friend, true
		}
	}
	return Friend{}, false
}

// skippedNamed returns the first skipped line that carries name.
func (f *Friends) skippedNamed(name string) (LineError, bool) {
	for _, le := range f.Skipped() {
		if le.Name != "" && strings.EqualFold(le.Name, name) {
			return le, true
		}
	}
	return LineError{}, false
}

// ErrNoFriend is what errors for a name that no friend has match (errors.Is).
var ErrNoFriend = errors.New("no such friend")

type noFriendError string

func (n noFriendError) Error() string        { return fmt.Sprintf("no friend named %q", string(n)) }
func (n noFriendError) Is(target error) bool { return target == ErrNoFriend }

// Add appends a friend. The name and key must both be new, and the name
// must not be on a skipped line either (fixing that line would make two).
func (f *Friends) Add(fr Friend) error {
	if err := ValidName(fr.Name); err != nil {
		return err
	}
	if _, ok := f.ByName(fr.Name); ok {
		return fmt.Errorf("there is already a friend named %q", fr.Name)
	}
	if le, ok := f.skippedNamed(fr.Name); ok {
		return fmt.Errorf("line %d of the friends file already names %q (kin skips that line: %v)", le.Line, fr.Name, le.Err)
	}
	if old, ok := f.ByKey(fr.Key); ok {
		return fmt.Errorf("that key is already your friend %q", old.Name)
	}
	f.lines = append(f.lines, fline{raw: fr.Line()})
	f.parse()
	return nil
}

// Remove deletes every line that names the friend: the friend's own line
// and skipped lines whose name="..." option is that name (so a broken line
// can be removed by name). Other lines stay as they are.
func (f *Friends) Remove(name string) error {
	kept := f.lines[:0:0]
	for _, l := range f.lines {
		if l.friend != nil && strings.EqualFold(l.friend.Name, name) ||
			l.err != nil && l.name != "" && strings.EqualFold(l.name, name) {
			continue
		}
		kept = append(kept, l)
	}
	if len(kept) == len(f.lines) {
		return noFriendError(name)
	}
	f.lines = kept
	f.parse()
	return nil
}

// SetPerms replaces what the friend called name may do. Only that
// friend's line changes, and in it only the options: the key and comment
// stay as written.
func (f *Friends) SetPerms(name string, p Permissions) error {
	for i, l := range f.lines {
		if l.friend == nil || !strings.EqualFold(l.friend.Name, name) {
			continue
		}
		fr := *l.friend
		fr.Perms = p
		trimmed := strings.TrimLeft(l.raw, " \t")
		indent := l.raw[:len(l.raw)-len(trimmed)]
		_, rest, ok := splitOptions(trimmed)
		if !ok { // cannot happen for an entry: it has name="..."
			f.lines[i].raw = fr.Line()
		} else {
			f.lines[i].raw = indent + strings.Join(fr.lineOptions(), ",") + rest
		}
		f.parse()
		return nil
	}
	if le, ok := f.skippedNamed(name); ok {
		return fmt.Errorf("kin skips line %d of the friends file, which names %q: %v", le.Line, name, le.Err)
	}
	return noFriendError(name)
}

// Marshal renders the file, every line as it was read or written.
func (f *Friends) Marshal() []byte {
	if len(f.lines) == 0 {
		return nil
	}
	var b strings.Builder
	for _, l := range f.lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return []byte(b.String())
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
