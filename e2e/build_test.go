package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// internal/ holds the test labs and the harness; the kin binary must not
// be built from any of them (production helpers live beside the layers,
// as pionlog/ does).
func TestBinaryUsesNoTestLab(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "kin").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps kin: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "kin/internal/") {
			t.Errorf("the kin binary imports %s, a test lab; move what production needs out of internal/", pkg)
		}
	}
}
