package files

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// names only Windows cannot take.
var windowsOnly = []string{"c:evil", "what?.txt", "a*b", "x<y>z", `say "hi"`, "a|b", "CON", "sub/nul.txt", "LPT1", "trailing.", "space ", "dir:x/f"}

// A receiver on Windows refuses names Windows cannot take, and says so to
// the sender with a code (ErrNotPortable); a receiver elsewhere keeps them.
func TestWindowsNamesOnlyWhereTheyCannotBe(t *testing.T) {
	for _, p := range windowsOnly {
		if _, err := cleanPath(p, true); !errors.Is(err, ErrNotPortable) {
			t.Errorf("%q on Windows: %v, want ErrNotPortable", p, err)
		}
		if _, err := cleanPath(p, false); err != nil {
			t.Errorf("%q elsewhere: %v", p, err)
		}
	}
	src := t.TempDir()
	name := filepath.Join(src, "notes: 2026?.txt")
	writeRandom(t, name, 1000)
	plan := mustScan(t, name)
	if len(plan.NotPortable) != 1 || plan.NotPortable[0] != name {
		t.Fatalf("NotPortable = %v", plan.NotPortable)
	}

	// Windows: refused, and the sender learns why.
	win := t.TempDir()
	_, _, serr, rerr := transferWith(t, plan, &Inbox{Dir: win, windows: true}, nil)
	if !errors.Is(serr, ErrNotPortable) || !strings.Contains(serr.Error(), "the receiver is on Windows: \"notes: 2026?.txt\" is not portable to Windows") {
		t.Errorf("sender to Windows: %v", serr)
	}
	if !errors.Is(rerr, ErrNotPortable) {
		t.Errorf("Windows receiver: %v", rerr)
	}
	if entries, _ := os.ReadDir(win); len(entries) != 0 {
		t.Errorf("Windows inbox has %v", entries)
	}

	// Elsewhere: kept as it is.
	unix := t.TempDir()
	if _, _, serr, rerr := transferWith(t, plan, &Inbox{Dir: unix}, nil); serr != nil || rerr != nil {
		t.Fatalf("to a Unix receiver: %v / %v", serr, rerr)
	}
	if sum(t, filepath.Join(unix, "notes: 2026?.txt")) != sum(t, name) {
		t.Error("the file landed different")
	}

	// Renamed by the sender: Windows takes it.
	renamed, err := ScanPortable(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(renamed.Renamed) != 1 || renamed.Renamed[0] != [2]string{name, "notes_ 2026_.txt"} || len(renamed.NotPortable) != 0 {
		t.Fatalf("Renamed %v, NotPortable %v", renamed.Renamed, renamed.NotPortable)
	}
	win = t.TempDir()
	if _, _, serr, rerr := transferWith(t, renamed, &Inbox{Dir: win, windows: true}, nil); serr != nil || rerr != nil {
		t.Fatalf("renamed to Windows: %v / %v", serr, rerr)
	}
	if sum(t, filepath.Join(win, "notes_ 2026_.txt")) != sum(t, name) {
		t.Error("the renamed file landed different")
	}
}

// --rename renames inside directories too, links with their targets, and
// refuses two names that would become one.
func TestScanPortableRenamesATree(t *testing.T) {
	src := t.TempDir()
	tree := filepath.Join(src, "music?")
	writeRandom(t, filepath.Join(tree, "a:b", "CON.mp3"), 10)
	writeRandom(t, filepath.Join(tree, "ok.txt"), 10)
	os.Symlink("a:b/CON.mp3", filepath.Join(tree, "link"))
	plan, err := ScanPortable(tree)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range plan.Offer.Entries {
		paths = append(paths, e.Path+"->"+e.Link)
		if err := Portable(e.Path); err != nil {
			t.Errorf("offered %q: %v", e.Path, err)
		}
	}
	got := strings.Join(paths, " ")
	for _, want := range []string{"music_->", "music_/a_b->", "music_/a_b/CON_.mp3->", "music_/ok.txt->", "music_/link->a_b/CON_.mp3"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("entries %s lack %s", got, want)
		}
	}
	inbox := t.TempDir()
	if _, _, serr, rerr := transferWith(t, plan, &Inbox{Dir: inbox, windows: true}, nil); serr != nil || rerr != nil {
		t.Fatalf("renamed tree to Windows: %v / %v", serr, rerr)
	}
	if _, err := os.Stat(filepath.Join(inbox, "music_", "link")); err != nil {
		t.Errorf("link: %v", err)
	}

	clash := t.TempDir()
	writeRandom(t, filepath.Join(clash, "d", "a:b"), 1)
	writeRandom(t, filepath.Join(clash, "d", "a_b"), 1)
	if _, err := ScanPortable(filepath.Join(clash, "d")); err == nil || !strings.Contains(err.Error(), "renamed it would be d/a_b") {
		t.Errorf("two names that become one: %v", err)
	}
}

func FuzzPortableName(f *testing.F) {
	for _, s := range append(windowsOnly, "a", "photos/2026/x.jpg", "..", "a/../b", "CON.", "nul .txt", "a\x01b", `back\slash`) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r := PortableName(p)
		if Portable(p) == nil && r != p {
			t.Fatalf("portable %q renamed to %q", p, r)
		}
		if PortableName(r) != r {
			t.Fatalf("renaming %q twice: %q then %q", p, r, PortableName(r))
		}
		if strings.Count(r, "/") != strings.Count(p, "/") {
			t.Fatalf("%q renamed to %q: components changed", p, r)
		}
		for _, c := range strings.Split(r, "/") {
			if c == "" || c == "." || c == ".." {
				continue
			}
			if err := Portable(c); err != nil {
				t.Fatalf("%q renamed to %q: %v", p, r, err)
			}
		}
	})
}
