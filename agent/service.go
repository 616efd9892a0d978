package agent

// kin up as a per-user service, started at login: a systemd user unit
// (Linux), a launchd agent (macOS) or a scheduled task (Windows); one file
// per system, service_GOOS.go.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrTemporaryBinary is why Install refuses a kin that runs from a
// temporary directory (go run, go test, a download in /tmp).
var ErrTemporaryBinary = errors.New("a service must start a kin that stays")

// ErrNoServiceManager says kin knows no service manager on this system.
var ErrNoServiceManager = fmt.Errorf("kin up --install does not know how to make a service on %s", runtime.GOOS)

// Service is kin up as a per-user service.
type Service struct {
	Binary string    // the kin to start
	Args   []string  // its arguments: global flags, "up", up's flags
	Out    io.Writer // hears each file written and command run
}

// Install writes the service and starts it.
func (s Service) Install() error {
	if TemporaryBinary(s.Binary) {
		return fmt.Errorf("this kin runs from a temporary directory (%s), which goes away; %w", filepath.Dir(s.Binary), ErrTemporaryBinary)
	}
	return s.install()
}

// Uninstall stops the service and removes it.
func (s Service) Uninstall() error { return s.uninstall() }

// TemporaryBinary reports whether the binary at path lives somewhere
// that disappears: the system's temporary directory, $GOTMPDIR, the Go
// build cache ($GOCACHE), or a go-build directory (go run, go test).
func TemporaryBinary(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	var temps []string
	for _, d := range []string{os.TempDir(), os.Getenv("GOTMPDIR"), os.Getenv("GOCACHE")} {
		if d == "" {
			continue
		}
		temps = append(temps, filepath.Clean(d))
		if real, err := filepath.EvalSymlinks(d); err == nil {
			temps = append(temps, real)
		}
	}
	for _, p := range paths {
		for _, d := range temps {
			if rel, err := filepath.Rel(d, p); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
				return true
			}
		}
		for _, part := range strings.Split(filepath.ToSlash(p), "/") {
			if strings.HasPrefix(part, "go-build") {
				return true
			}
		}
	}
	return false
}

// run runs a service manager's command, saying so first.
func (s Service) run(name string, args ...string) error {
	fmt.Fprintf(s.Out, "running: %s %s\n", name, strings.Join(args, " "))
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// write writes a service file, saying so.
func (s Service) write(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(s.Out, "wrote %s\n", path)
	return nil
}

// remove removes a service file, saying so.
func (s Service) remove(path string) {
	os.Remove(path)
	fmt.Fprintf(s.Out, "removed %s\n", path)
}

// userFile is path under the user's home directory.
func userFile(path ...string) string {
	home, _ := os.UserHomeDir()
	return filepath.Join(append([]string{home}, path...)...)
}

func quoteArgs(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"'\\") {
			a = `"` + strings.ReplaceAll(strings.ReplaceAll(a, `\`, `\\`), `"`, `\"`) + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
