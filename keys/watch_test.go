package keys

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A watched friends file logs a skipped line once, and a change once.
func TestWatchFriendsLogsOncePerChange(t *testing.T) {
	bob, carol := mustIdentity(t), mustIdentity(t)
	path := filepath.Join(t.TempDir(), "friends")
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`name="bob" `+FormatKey(bob.Public()), "this line is no friend")
	var log bytes.Buffer
	ff, f, err := WatchFriends(path, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.List()) != 1 || strings.Count(log.String(), "line skipped") != 1 || strings.Contains(log.String(), "changed") {
		t.Fatalf("first read: %d friends, log:\n%s", len(f.List()), log.String())
	}
	ff.Current()
	write(`name="bob" `+FormatKey(bob.Public()), `name="carol" `+FormatKey(carol.Public()))
	ff.Current()
	ff.Current()
	if got := ff.Get(); len(got.List()) != 2 || strings.Count(log.String(), "friends file changed") != 1 || strings.Count(log.String(), "line skipped") != 1 {
		t.Fatalf("after the edit: %d friends, log:\n%s", len(got.List()), log.String())
	}
}

// Friends are found by the name given them, or by their kin ID.
func TestFindByNameOrID(t *testing.T) {
	bob := mustIdentity(t)
	f, _ := ParseFriends([]byte(`name="bob" ` + FormatKey(bob.Public()) + "\n"))
	for _, s := range []string{"bob", string(bob.ID()), strings.ToUpper(string(bob.ID()))} {
		if fr, ok := f.Find(s); !ok || fr.Name != "bob" {
			t.Errorf("Find(%q) = %+v, %v", s, fr, ok)
		}
	}
	if _, ok := f.Find("carol"); ok {
		t.Error("found carol, who is no friend")
	}
}
