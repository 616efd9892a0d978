package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFriendsFileFollowsTheFile(t *testing.T) {
	bob, carol := mustIdentity(t), mustIdentity(t)
	path := filepath.Join(t.TempDir(), "friends")
	type change struct {
		names   string
		skipped []LineError
		err     error
	}
	var changes []change
	ff := &FriendsFile{Path: path, OnChange: func(f *Friends, skipped []LineError, err error) {
		var n []string
		for _, x := range f.List() {
			n = append(n, x.Name)
		}
		changes = append(changes, change{strings.Join(n, ","), skipped, err})
	}}
	names := func() string {
		t.Helper()
		f, _, _ := ff.Current()
		var n []string
		for _, x := range f.List() {
			n = append(n, x.Name)
		}
		return strings.Join(n, ",")
	}
	lastChange := func(want string, nchanges int) change {
		t.Helper()
		if len(changes) != nchanges || changes[len(changes)-1].names != want {
			t.Fatalf("changes %+v, want %d, the last with %q", changes, nchanges, want)
		}
		return changes[len(changes)-1]
	}

	// No file: no friends.
	if n := names(); n != "" {
		t.Fatalf("missing file: %q", n)
	}
	lastChange("", 1)

	// The file appears.
	bobLine := `name="bob",permit-shell ` + bob.AuthorizedKey() + "\n"
	if err := os.WriteFile(path, []byte(bobLine), 0o600); err != nil {
		t.Fatal(err)
	}
	first, _, _ := ff.Current()
	if _, ok := first.ByKey(bob.Public()); !ok {
		t.Fatal("bob missing")
	}
	lastChange("bob", 2)
	// Asked again (the file is racy-new, so it is read again): the same
	// friends, and no second report.
	if again, _, _ := ff.Current(); again != first {
		t.Fatal("unchanged file parsed again")
	}
	lastChange("bob", 2)

	// Rewritten in place with text of the same size, within the same
	// mtime tick (made so by hand): still seen, because the file's mtime is
	// too recent to trust.
	st, _ := os.Stat(path)
	sameSize := strings.Replace(bobLine, "shell", "files", 1)
	if err := os.WriteFile(path, []byte(sameSize), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, st.ModTime(), st.ModTime())
	if f, _, _ := ff.Current(); f == first {
		t.Fatal("same-size rewrite in the same mtime tick not seen")
	}
	if fr, _ := ff.Get().ByName("bob"); fr.Perms.String() != "files" {
		t.Fatalf("bob may %s", fr.Perms)
	}
	lastChange("bob", 3)

	// Replaced (a new inode) by one bad line and carol: bob is out at once.
	bad := "name=\"bob\",permit-everything " + bob.AuthorizedKey() + "\n" + `name="carol",permit-shell ` + carol.AuthorizedKey() + "\n"
	if err := WriteFileAtomic(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	f, skipped, err := ff.Current()
	if _, ok := f.ByKey(bob.Public()); ok || err != nil {
		t.Fatalf("bob still a friend with a broken line (err %v)", err)
	}
	if _, ok := f.ByKey(carol.Public()); !ok || len(skipped) != 1 || skipped[0].Line != 1 || skipped[0].Name != "bob" {
		t.Fatalf("carol missing or skipped %v", skipped)
	}
	if c := lastChange("carol", 4); len(c.skipped) != 1 {
		t.Fatalf("report %+v", c)
	}

	// Touched without a change: nothing to report.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	if names() != "carol" {
		t.Fatal("touch changed the friends")
	}
	lastChange("carol", 4)
	// With an old mtime the stat is trusted: a rewrite that keeps the
	// inode, the size and the mtime (only possible on purpose) is not read,
	// which shows that an unchanged file costs a stat, not a parse.
	cached, _, _ := ff.Current()
	os.WriteFile(path, []byte(strings.Replace(bad, "carol", "carla", 2)), 0o600)
	os.Chtimes(path, old, old)
	if now, _, _ := ff.Current(); now != cached {
		t.Fatal("an unchanged stat re-read the file")
	}

	// Unreadable: nobody is a friend, and the error says why.
	os.Remove(path)
	os.Mkdir(path, 0o700)
	f, _, err = ff.Current()
	if err == nil || len(f.List()) != 0 {
		t.Fatalf("unreadable file: %d friends, err %v", len(f.List()), err)
	}
	lastChange("", 5)
	ff.Current()
	lastChange("", 5) // reported once, not at every look

	// Removed: no friends, no error.
	os.Remove(path)
	if f, _, err := ff.Current(); err != nil || len(f.List()) != 0 {
		t.Fatalf("removed file: %v %v", f.List(), err)
	}
	lastChange("", 6)
}

// Servers ask from many goroutines while the file is being rewritten.
func TestFriendsFileConcurrentUse(t *testing.T) {
	bob := mustIdentity(t)
	path := filepath.Join(t.TempDir(), "friends")
	changes := 0
	ff := &FriendsFile{Path: path, OnChange: func(*Friends, []LineError, error) { changes++ }}
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; j < 200; j++ {
				ff.Get().ByKey(bob.Public())
			}
		}()
	}
	for j := 0; j < 50; j++ {
		line := `name="bob" ` + bob.AuthorizedKey() + "\n"
		if j%2 == 1 {
			line = "broken\n"
		}
		if err := WriteFileAtomic(path, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		<-done
	}
	if _, ok := ff.Get().ByKey(bob.Public()); ok {
		t.Fatal("the last version (broken) is not the one in force")
	}
	if changes == 0 {
		t.Fatal("no change reported")
	}
}
