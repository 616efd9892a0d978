package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// The release builder, for one target (this machine's when it is a release
// target, so the binary can run): the archive holds the folder with kin and
// README.md, SHA256SUMS has its real checksum, and the binary prints the
// stamped version and build date.
func TestReleaseOneTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kin")
	}
	target := runtime.GOOS + "/" + runtime.GOARCH
	runnable := slices.Contains(targets, target) && runtime.GOOS != "windows"
	if !runnable {
		target = "linux/amd64"
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1000000000")
	out := t.TempDir()
	root, _ := filepath.Abs("..")
	var log bytes.Buffer
	archives, err := build(context.Background(), config{version: "v0.0.0-test", out: out, targets: []string{target}, root: root}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	goos, goarch, _ := strings.Cut(target, "/")
	base := "kin_v0.0.0-test_" + goos + "_" + goarch
	want := filepath.Join(out, base+".tar.gz")
	if !slices.Equal(archives, []string{want}) {
		t.Fatalf("archives %q, want %q", archives, want)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"SHA256SUMS", base + ".tar.gz"}) {
		t.Errorf("output folder holds %q", names)
	}

	data, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sums, _ := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if got, want := string(sums), hex.EncodeToString(sum[:])+"  "+base+".tar.gz\n"; got != want {
		t.Errorf("SHA256SUMS:\n%s\nwant\n%s", got, want)
	}

	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	contents := map[string][]byte{}
	modes := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		contents[h.Name], modes[h.Name] = b, h.Mode
		if !h.ModTime.Equal(time.Unix(1000000000, 0)) {
			t.Errorf("%s dated %v, not SOURCE_DATE_EPOCH", h.Name, h.ModTime)
		}
	}
	readme, _ := os.ReadFile(filepath.Join(root, "README.md"))
	if !bytes.Equal(contents[base+"/README.md"], readme) {
		t.Errorf("README.md in the archive differs from the repository's")
	}
	bin := contents[base+"/kin"]
	if len(bin) == 0 || modes[base+"/kin"] != 0o755 {
		t.Fatalf("no executable %s/kin in the archive (entries: %v)", base, modes)
	}
	if !runnable {
		return
	}
	exe := filepath.Join(t.TempDir(), "kin")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(exe, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "kin version v0.0.0-test (built 2001-09-09T01:46:40Z)\n"; string(got) != want {
		t.Errorf("kin --version: %q, want %q", got, want)
	}
}

// Windows archives are zips with the same layout; written here from small
// files, without building for Windows.
func TestZipArchive(t *testing.T) {
	dir := t.TempDir()
	exe, doc := filepath.Join(dir, "kin.exe"), filepath.Join(dir, "README.md")
	os.WriteFile(exe, []byte("MZ binary bytes"), 0o755)
	os.WriteFile(doc, []byte("# kin\n"), 0o644)
	path := filepath.Join(dir, "out.zip")
	sum, err := writeAtomic(path, func(w io.Writer) error {
		return writeZip(w, "kin_v1_windows_amd64", []file{{"kin.exe", exe, 0o755}, {"README.md", doc, 0o644}}, time.Unix(1000000000, 0))
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if h := sha256.Sum256(data); hex.EncodeToString(h[:]) != sum {
		t.Errorf("writeAtomic returned %s, the file's SHA-256 is %x", sum, h)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range zr.File {
		r, _ := f.Open()
		b, _ := io.ReadAll(r)
		r.Close()
		got[f.Name] = string(b)
		if f.Name == "kin_v1_windows_amd64/kin.exe" && f.Mode().Perm() != 0o755 {
			t.Errorf("kin.exe mode %v", f.Mode())
		}
	}
	if len(got) != 2 || got["kin_v1_windows_amd64/kin.exe"] != "MZ binary bytes" || got["kin_v1_windows_amd64/README.md"] != "# kin\n" {
		t.Errorf("zip holds %q", got)
	}
}

// Bad input is refused before anything is built or written.
func TestReleaseRefusesBadInput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "dist")
	for _, c := range []config{
		{version: "v1", targets: []string{"plan9/386"}},
		{version: "../v1", targets: []string{"linux/amd64"}},
		{version: "v1 beta", targets: []string{"linux/amd64"}},
	} {
		c.out, c.root = out, ".."
		if _, err := build(context.Background(), c, io.Discard); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the output folder was made: %v", err)
	}
}
