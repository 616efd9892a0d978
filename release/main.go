// Command release builds kin's release archives, from the repository root:
//
//	go run ./release                         every target, into dist/
//	go run ./release -version v1.2.0         stamp this version (default: git describe)
//	go run ./release -targets linux/amd64 -out /tmp/kin-dist
//
// Each target becomes dist/kin_VERSION_OS_ARCH.tar.gz (.zip for Windows)
// holding one folder with the kin binary, README.md and LICENSE (when the
// repository has one), and dist/SHA256SUMS lists the archives' checksums
// in the format `sha256sum -c SHA256SUMS` checks. Binaries are static
// (CGO_ENABLED=0), built with -trimpath, and stamped with the version and
// build date that kin --version prints; SOURCE_DATE_EPOCH, when set, is
// the build date, so two builds of one commit give the same archives.
package main

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// targets are the platforms a release is built for, as GOOS/GOARCH.
var targets = []string{"linux/amd64", "linux/arm64", "darwin/arm64", "darwin/amd64", "windows/amd64"}

func main() {
	var c config
	var list string
	flag.StringVar(&c.version, "version", "", "version to stamp (default: git describe --tags --always --dirty)")
	flag.StringVar(&c.out, "out", "dist", "folder for the archives and SHA256SUMS")
	flag.StringVar(&list, "targets", strings.Join(targets, ","), "comma-separated GOOS/GOARCH pairs to build")
	flag.Parse()
	c.targets = strings.Split(list, ",")
	archives, err := build(context.Background(), c, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "release: %v\n", err)
		os.Exit(1)
	}
	for _, a := range archives {
		fmt.Println(a)
	}
}

type config struct {
	version string   // stamped into the binaries and the archive names
	out     string   // where archives and SHA256SUMS go
	targets []string // GOOS/GOARCH pairs
	root    string   // the module's folder (default: found with go env GOMOD)
}

// versionRE is what a version may look like: it becomes part of file names.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// build makes one archive per target and the SHA256SUMS file, and returns
// the archives' paths. Progress goes to log.
func build(ctx context.Context, c config, log io.Writer) ([]string, error) {
	for _, t := range c.targets {
		if !slices.Contains(targets, t) {
			return nil, fmt.Errorf("unknown target %q: choose from %s", t, strings.Join(targets, ", "))
		}
	}
	if c.root == "" {
		gomod, err := output(ctx, "", nil, "go", "env", "GOMOD")
		if err != nil || gomod == "" || gomod == os.DevNull {
			return nil, fmt.Errorf("find kin's go.mod (run this inside the repository): %v", err)
		}
		c.root = filepath.Dir(gomod)
	}
	if c.version == "" {
		v, err := output(ctx, c.root, nil, "git", "describe", "--tags", "--always", "--dirty")
		if err != nil {
			return nil, fmt.Errorf("ask git for the version (or give -version): %w", err)
		}
		c.version = v
	}
	if !versionRE.MatchString(c.version) {
		return nil, fmt.Errorf("version %q: use letters, digits and . _ + - only (it names the archives)", c.version)
	}
	date, err := buildDate()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return nil, fmt.Errorf("make the output folder: %w", err)
	}
	tmp, err := os.MkdirTemp("", "kin-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	var docs []string
	for _, name := range []string{"README.md", "LICENSE"} {
		if _, err := os.Stat(filepath.Join(c.root, name)); err == nil {
			docs = append(docs, name)
		}
	}
	var archives []string
	sums := map[string]string{}
	for _, t := range c.targets {
		goos, goarch, _ := strings.Cut(t, "/")
		exe := "kin"
		if goos == "windows" {
			exe += ".exe"
		}
		fmt.Fprintf(log, "building %s %s\n", c.version, t)
		bin := filepath.Join(tmp, goos+"_"+goarch, exe)
		ldflags := fmt.Sprintf("-s -w -X kin/cmd.Version=%s -X kin/cmd.BuildDate=%s", c.version, date.Format(time.RFC3339))
		env := []string{"GOOS=" + goos, "GOARCH=" + goarch, "CGO_ENABLED=0"}
		if _, err := output(ctx, c.root, env, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "."); err != nil {
			return nil, fmt.Errorf("build %s: %w", t, err)
		}
		files := []file{{name: exe, path: bin, mode: 0o755}}
		for _, d := range docs {
			files = append(files, file{name: d, path: filepath.Join(c.root, d), mode: 0o644})
		}
		base := fmt.Sprintf("kin_%s_%s_%s", c.version, goos, goarch)
		name := base + ".tar.gz"
		write := writeTarGz
		if goos == "windows" {
			name, write = base+".zip", writeZip
		}
		path := filepath.Join(c.out, name)
		sum, err := writeAtomic(path, func(w io.Writer) error { return write(w, base, files, date) })
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		sums[name] = sum
		archives = append(archives, path)
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(sums)) {
		fmt.Fprintf(&b, "%s  %s\n", sums[name], name)
	}
	if _, err := writeAtomic(filepath.Join(c.out, "SHA256SUMS"), func(w io.Writer) error {
		_, err := io.WriteString(w, b.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("write SHA256SUMS: %w", err)
	}
	return archives, nil
}

// buildDate is SOURCE_DATE_EPOCH (reproducible builds) or now, in UTC.
func buildDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// output runs a command in dir and returns its trimmed standard output;
// a failure carries what the command printed on standard error.
func output(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// file is one file put into an archive.
type file struct {
	name string // its name inside the archive's folder
	path string // where it is read from
	mode int64
}

// writeAtomic writes a file through write, in full or not at all, and
// returns the SHA-256 of what it wrote, in hex.
func writeAtomic(path string, write func(io.Writer) error) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing to remove
	h := sha256.New()
	err = write(io.MultiWriter(f, h))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeTarGz writes the files into a gzipped tar, in the folder dir.
func writeTarGz(w io.Writer, dir string, files []file, date time.Time) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: date, Format: tar.FormatPAX}); err != nil {
		return err
	}
	for _, f := range files {
		src, err := os.Open(f.path)
		if err != nil {
			return err
		}
		info, err := src.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dir + "/" + f.name, Mode: f.mode, Size: info.Size(), ModTime: date, Format: tar.FormatPAX})
		}
		if err == nil {
			_, err = io.Copy(tw, src)
		}
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return errors.Join(tw.Close(), gz.Close())
}

// writeZip writes the files into a zip, in the folder dir.
func writeZip(w io.Writer, dir string, files []file, date time.Time) error {
	zw := zip.NewWriter(w)
	for _, f := range files {
		src, err := os.Open(f.path)
		if err != nil {
			return err
		}
		h := &zip.FileHeader{Name: dir + "/" + f.name, Method: zip.Deflate, Modified: date}
		h.SetMode(os.FileMode(f.mode))
		dst, err := zw.CreateHeader(h)
		if err == nil {
			_, err = io.Copy(dst, src)
		}
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return zw.Close()
}
