package cmd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// go test runs this binary from a go-build directory, as go run would:
// up --install must refuse it and write no service file.
func TestInstallRefusesATemporaryBinary(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	var out strings.Builder
	e := &env{home: filepath.Join(home, "kin"), signal: "ws://127.0.0.1:1", stdout: &out, stderr: &out}
	err := installService(e, true, "", "")
	var h *hinted
	if err == nil || !errors.As(err, &h) || !strings.Contains(err.Error(), "temporary directory") || !strings.Contains(h.hint, "go install") {
		t.Fatalf("install from a temporary binary: %v", err)
	}
	for _, p := range []string{".config/systemd/user/kin.service", "Library/LaunchAgents/org.kin.up.plist"} {
		if _, err := os.Stat(filepath.Join(home, p)); err == nil {
			t.Errorf("%s was written", p)
		}
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}
