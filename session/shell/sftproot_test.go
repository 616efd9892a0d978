//go:build !windows

package shell

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"
)

// A files-only session: sftp works inside its folder, and nothing reaches
// outside it: not "..", not absolute paths, not symbolic links, not commands.
func TestSFTPConfinedToFolder(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "backups", "kid")
	outside := filepath.Join(base, "secret.txt")
	os.WriteFile(outside, []byte("mom's"), 0o600)
	c, done := pairWith(t, Config{Shell: "/bin/sh", SFTPRoot: root})
	defer done()

	// No commands, no shell.
	s, _ := c.NewSession()
	if err := s.Run("touch " + filepath.Join(base, "pwned")); err == nil {
		t.Fatal("a command ran in an sftp-only session")
	}
	if _, err := os.Stat(filepath.Join(base, "pwned")); err == nil {
		t.Fatal("the command ran")
	}

	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// What restic does: mkdir -p, write a temporary file, chmod, rename
	// over, list, read back, remove.
	if err := sc.MkdirAll("/repo/data/ab"); err != nil {
		t.Fatal(err)
	}
	f, err := sc.OpenFile("/repo/data/ab/tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("pack"))
	if err := f.Chmod(0o400); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := sc.PosixRename("/repo/data/ab/tmp", "repo/data/ab/pack1"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "repo/data/ab/pack1")); err != nil || string(b) != "pack" {
		t.Fatalf("in the folder: %q, %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(root, "repo/data/ab/pack1"))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	list, err := sc.ReadDir("/repo/data/ab")
	if err != nil || len(list) != 1 || list[0].Name() != "pack1" || list[0].Size() != 4 {
		t.Fatalf("list: %v %v", list, err)
	}
	r, _ := sc.Open("/repo/data/ab/pack1")
	if b, _ := io.ReadAll(r); string(b) != "pack" {
		t.Fatalf("read back %q", b)
	}
	r.Close()
	if wd, _ := sc.Getwd(); wd != "/" {
		t.Errorf("working directory %q, want /", wd)
	}
	if err := sc.Remove("/repo/data/ab/pack1"); err != nil {
		t.Fatal(err)
	}

	// Plain rename does not replace.
	for _, n := range []string{"/a", "/b"} {
		f, _ := sc.Create(n)
		f.Close()
	}
	if err := sc.Rename("/a", "/b"); err == nil {
		t.Error("rename replaced a file")
	}

	// Escapes: everything stays inside or fails.
	for _, p := range []string{"../secret.txt", "/../secret.txt", "../../" + outside, outside} {
		if r, err := sc.Open(p); err == nil {
			b, _ := io.ReadAll(r)
			r.Close()
			if string(b) == "mom's" {
				t.Fatalf("read %s outside the folder", p)
			}
		}
		sc.Remove(p)
	}
	if b, _ := os.ReadFile(outside); string(b) != "mom's" {
		t.Fatal("the file outside was changed")
	}
	// A symbolic link someone put in the folder does not lead out.
	os.Symlink(outside, filepath.Join(root, "link"))
	os.Symlink(base, filepath.Join(root, "dirlink"))
	if r, err := sc.Open("/link"); err == nil {
		r.Close()
		t.Fatal("followed a symbolic link out of the folder")
	}
	if _, err := sc.Create("/dirlink/new"); err == nil {
		t.Fatal("created a file through a symbolic link out of the folder")
	}
	if _, err := sc.ReadDir("/dirlink"); err == nil {
		t.Fatal("listed a directory outside the folder")
	}
	if err := sc.Chmod("/link", 0o777); err == nil {
		t.Fatal("chmod through a symbolic link out of the folder")
	}
	if err := sc.PosixRename("/dirlink/secret.txt", "/stolen"); err == nil {
		t.Fatal("renamed a file from outside the folder")
	}
	// No links made, no owners changed, the folder itself stays.
	if err := sc.Symlink(outside, "/mylink"); err == nil {
		t.Error("made a symbolic link")
	}
	if err := sc.Link("/b", "/hard"); err == nil {
		t.Error("made a hard link")
	}
	if err := sc.Chown("/b", 0, 0); err == nil {
		t.Error("changed an owner")
	}
	if err := sc.RemoveDirectory("/"); err == nil {
		t.Error("removed the folder itself")
	}
	if err := sc.Chmod("/b", 0o4755); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "b")); fi.Mode()&os.ModeSetuid != 0 {
		t.Error("set-uid bit set")
	}
	if _, err := os.Stat(filepath.Join(base, "mylink")); err == nil {
		t.Error("a link appeared outside")
	}
}

// rel never gives a path that leaves the root (os.Root checks again).
func FuzzSFTPPath(f *testing.F) {
	for _, s := range []string{"", "/", ".", "..", "/../x", "a/../../b", "/repo/data", `..\x`, "a//b/./c/", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r := rel(p)
		if r != "." && !filepath.IsLocal(r) {
			t.Fatalf("rel(%q) = %q leaves the root", p, r)
		}
		if strings.HasPrefix(r, "/") {
			t.Fatalf("rel(%q) = %q is absolute", p, r)
		}
	})
}
