package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTemporaryBinary(t *testing.T) {
	tmp := os.TempDir()
	cases := map[string]bool{
		filepath.Join(tmp, "go-build1234", "b001", "exe", "kin"): true,
		filepath.Join(tmp, "kin"):                                true,
		filepath.Join(tmp, "x", "y", "kin"):                      true,
		"/home/ann/.cache/go-build98/b001/exe/kin":               true,
		"/usr/local/bin/kin":                                     false,
		"/home/ann/go/bin/kin":                                   false,
		"/home/ann/.local/bin/kin":                               false,
		tmp + "-not-temp/kin":                                    false,
	}
	for path, want := range cases {
		if got := TemporaryBinary(path); got != want {
			t.Errorf("TemporaryBinary(%q) = %v, want %v", path, got, want)
		}
	}
}
