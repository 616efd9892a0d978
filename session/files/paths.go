package files

import (
	"errors"
	"fmt"
	"path"
	"runtime"
	"strings"
	"unicode/utf8"
)

// partialDir is the inbox's hidden directory for resumable state.
const partialDir = ".kin-partial"

// ErrNotPortable is in the error for a name Windows cannot take (see
// Portable); a receiver on Windows refuses such names, other receivers
// keep them.
var ErrNotPortable = errors.New("not portable to Windows")

// CleanPath checks a relative path that came from a peer and returns it
// unchanged if it is safe to create under an inbox on this computer: no
// absolute paths, no "..", ".", or empty components, no NUL or control
// characters, no backslashes, not kin's own state directory, and on
// Windows nothing Windows cannot name (Portable: drive letters, streams,
// reserved names and characters, trailing dots or spaces).
func CleanPath(p string) (string, error) {
	return cleanPath(p, runtime.GOOS == "windows")
}

// cleanPath is CleanPath for a receiver on Windows (windows) or not.
func cleanPath(p string, windows bool) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("refused path %q from the peer: %s", p, why)
	}
	if p == "" {
		return bad("empty")
	}
	if len(p) > 4096 {
		return bad("too long")
	}
	if !utf8.ValidString(p) {
		return bad("not UTF-8")
	}
	if strings.HasPrefix(p, "/") {
		return bad("absolute")
	}
	if strings.ContainsRune(p, '\\') {
		return bad("backslash")
	}
	parts := strings.Split(p, "/")
	if len(parts) > 64 {
		return bad("too deep")
	}
	for i, c := range parts {
		switch {
		case c == "":
			return bad("empty component")
		case c == "." || c == "..":
			return bad("dot component")
		case len(c) > 255:
			return bad("component too long")
		case i == 0 && c == partialDir:
			return bad("reserved name")
		}
		for _, r := range c {
			if r < 0x20 || r == 0x7f {
				return bad("control character")
			}
		}
	}
	if windows {
		if err := Portable(p); err != nil {
			return "", fmt.Errorf("refused path %q from the peer: %w", p, err)
		}
	}
	return p, nil
}

// windowsReserved are the characters Windows does not allow in a name
// (besides / and \, and control characters).
const windowsReserved = `:<>"|?*`

// Portable returns nil if Windows can take every component of the
// slash-separated path p as a file name, and otherwise an error wrapping
// ErrNotPortable that says which component and why.
func Portable(p string) error {
	for _, c := range strings.Split(p, "/") {
		why := ""
		switch {
		case c == "." || c == "..":
		case strings.ContainsAny(c, windowsReserved+"\\"):
			why = `it has one of \ : < > " | ? *`
		case strings.IndexFunc(c, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
			why = "it has a control character"
		case strings.HasSuffix(c, ".") || strings.HasSuffix(c, " "):
			why = "it ends in a dot or a space"
		case reservedOnWindows(c):
			why = "Windows reserves the name " + strings.ToUpper(windowsStem(c))
		}
		if why != "" {
			return fmt.Errorf("%q is %w: %s", c, ErrNotPortable, why)
		}
	}
	return nil
}

// PortableName returns the slash-separated path p with every component
// made a name Windows takes: \ : < > " | ? * and control characters become
// _, so does a trailing dot or space, and a reserved name (CON, NUL.txt,
// COM1...) gets a _ after its stem. "." and ".." stay as they are. A
// portable path comes back unchanged.
func PortableName(p string) string {
	parts := strings.Split(p, "/")
	for i, c := range parts {
		if c == "." || c == ".." || Portable(c) == nil {
			continue
		}
		c = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || strings.ContainsRune(windowsReserved+"\\", r) {
				return '_'
			}
			return r
		}, c)
		if c != "" && (c[len(c)-1] == '.' || c[len(c)-1] == ' ') {
			c = c[:len(c)-1] + "_"
		}
		if reservedOnWindows(c) {
			stem := windowsStem(c)
			c = stem + "_" + c[len(stem):]
		}
		parts[i] = c
	}
	return strings.Join(parts, "/")
}

// windowsStem is the part of a name Windows compares with its reserved
// names: up to the first dot.
func windowsStem(c string) string {
	if i := strings.IndexByte(c, '.'); i >= 0 {
		return c[:i]
	}
	return c
}

func reservedOnWindows(c string) bool {
	base := strings.ToUpper(c)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, " ")
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) {
		d := base[3]
		return d >= '0' && d <= '9' || strings.ContainsRune("¹²³", rune(d))
	}
	return false
}

// checkLink allows a symlink at p only if its target is relative and stays
// inside the transferred tree.
func checkLink(p, target string) error {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsAny(target, "\\:\x00") {
		return fmt.Errorf("refused symlink %q -> %q: target must be relative", p, target)
	}
	joined := path.Join(path.Dir(p), target)
	top := strings.SplitN(p, "/", 2)[0]
	if joined == ".." || strings.HasPrefix(joined, "../") || (joined != top && !strings.HasPrefix(joined, top+"/")) {
		return fmt.Errorf("refused symlink %q -> %q: it points outside what was sent", p, target)
	}
	return nil
}

// uniqueName returns name, or "name (1).ext", "name (2).ext", ... the first
// for which exists reports false.
func uniqueName(name string, exists func(string) bool) string {
	if !exists(name) {
		return name
	}
	dir, file := path.Split(name)
	ext := path.Ext(file)
	if ext == file { // ".bashrc"
		ext = ""
	}
	stem := strings.TrimSuffix(file, ext)
	for i := 1; ; i++ {
		cand := fmt.Sprintf("%s%s (%d)%s", dir, stem, i, ext)
		if !exists(cand) {
			return cand
		}
	}
}

// maxLinkHops is how many symlinks one resolution may follow (Linux: 40).
const maxLinkHops = 40

// lookupFunc describes a tree while links are checked: whether p exists
// and, if it is a symlink, its target.
type lookupFunc func(p string) (target string, isLink, exists bool)

// resolve follows the relative path p (slash-separated, from the top of
// the inbox or of the sent tree) the way the OS would, with every symlink
// lookup reports, and returns where it leads. It fails when the path
// leaves the top (".." past it, an absolute target), when it follows more
// than maxLinkHops links, and when ".." comes after a component that does
// not exist: what that means would be decided by whatever appears there
// later, so it cannot be checked now.
func resolve(p string, lookup lookupFunc) (string, error) {
	todo := strings.Split(p, "/")
	var cur []string
	hops := 0
	missing := false // a component of cur does not exist
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if missing {
				return "", fmt.Errorf("it goes through %s, which does not exist", strings.Join(cur, "/"))
			}
			if len(cur) == 0 {
				return "", errors.New("it leads outside")
			}
			cur = cur[:len(cur)-1]
			continue
		}
		name := strings.Join(append(cur[:len(cur):len(cur)], c), "/")
		target, isLink, exists := lookup(name)
		if isLink && !missing {
			if hops++; hops > maxLinkHops {
				return "", errors.New("it goes through too many links")
			}
			if target == "" || strings.HasPrefix(target, "/") || strings.ContainsAny(target, "\\:\x00") {
				return "", errors.New("it leads outside")
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue // a link's target is relative to the link's directory: cur stays
		}
		if !exists {
			missing = true
		}
		cur = append(cur, c)
	}
	return strings.Join(cur, "/"), nil
}

// linkReq is a symlink to be created at Name with target Target.
type linkReq struct{ Name, Target string }

// confineLinks decides which of links may be created so that each one,
// with the others that are created and every link lookup already knows
// about followed, resolves to a path inside its own top-level directory.
// lookup describes the tree without the links in question. It returns the
// reason for each link refused, by index; the others are safe together,
// whatever order they are created in.
func confineLinks(links []linkReq, lookup lookupFunc) map[int]string {
	refused := map[int]string{}
	byName := map[string]int{}
	for i, l := range links {
		byName[l.Name] = i
	}
	model := func(p string) (string, bool, bool) {
		if i, ok := byName[p]; ok {
			if _, gone := refused[i]; !gone {
				return links[i].Target, true, true
			}
		}
		return lookup(p)
	}
	for changed := true; changed; {
		changed = false
		for i, l := range links {
			if _, gone := refused[i]; gone {
				continue
			}
			top := strings.SplitN(l.Name, "/", 2)[0]
			dst, err := resolve(path.Dir(l.Name)+"/"+l.Target, model)
			switch {
			case err != nil:
				refused[i] = err.Error()
			case dst != top && !strings.HasPrefix(dst, top+"/"):
				refused[i] = "it leads to " + dst + ", outside " + top
			default:
				continue
			}
			changed = true
		}
	}
	return refused
}
