package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kin/keys"
)

// kin runs the command line in this process with KIN_HOME=home.
func kin(t *testing.T, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"kin", "--home", home}, args...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func newKey(t *testing.T) string {
	id, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id.AuthorizedKey()
}

// With a line kin cannot read, every friends subcommand still works, the
// line is named in a warning, and it stays in the file byte for byte
// unless it is the one removed.
func TestFriendsCommandsWorkAroundABrokenLine(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, "friends")
	bob, carol, dan := newKey(t), newKey(t), newKey(t)
	junk := "this is not a friend, just a typo  \r"
	brokenBob := `name="bob",permit-shel ` + bob + " bob@laptop"
	carolLine := `name="carol",permit-files ` + carol + " carol@pc"
	os.WriteFile(path, []byte(junk+"\n"+brokenBob+"\n"+carolLine+"\n"), 0o600)
	file := func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	mustKin := func(args ...string) (string, string) {
		t.Helper()
		out, errs, code := kin(t, home, args...)
		if code != 0 {
			t.Fatalf("kin %v: exit %d\n%s%s", args, code, out, errs)
		}
		return out, errs
	}

	out, errs := mustKin("friends", "ls")
	if !strings.Contains(out, "carol") || strings.Contains(out, "bob") {
		t.Errorf("ls:\n%s", out)
	}
	for _, w := range []string{path + " line 1 is skipped", path + " line 2 is skipped: unknown option \"permit-shel\"", "kin friends rm bob"} {
		if !strings.Contains(errs, w) {
			t.Errorf("ls warnings lack %q:\n%s", w, errs)
		}
	}

	// add: appends, the broken lines stay as they were.
	mustKin("friends", "add", "dan", dan, "--allow", "port=3000")
	danLine := `name="dan",permit-port=3000 ` + dan
	if got, want := file(), junk+"\n"+brokenBob+"\n"+carolLine+"\n"+danLine+"\n"; got != want {
		t.Fatalf("after add:\n%q\nwant\n%q", got, want)
	}
	// A name that only the broken line has is taken.
	if _, errs, code := kin(t, home, "friends", "add", "bob", newKey(t)); code == 0 || !strings.Contains(errs, "line 2") {
		t.Errorf("add bob over the broken line: exit %d, %s", code, errs)
	}

	// allow and deny change carol's line only, in place.
	if out, _ := mustKin("friends", "allow", "carol", "shell", "port=22,port=80"); !strings.Contains(out, "carol may now: shell,files,port=22,port=80") {
		t.Errorf("allow: %q", out)
	}
	mustKin("friends", "deny", "Carol", "files", "port=22")
	carolLine = `name="carol",permit-shell,permit-port=80 ` + carol + " carol@pc"
	if got, want := file(), junk+"\n"+brokenBob+"\n"+carolLine+"\n"+danLine+"\n"; got != want {
		t.Fatalf("after allow/deny:\n%q\nwant\n%q", got, want)
	}
	mustKin("friends", "allow", "dan", "port=*")
	if _, errs, code := kin(t, home, "friends", "deny", "dan", "port=3000"); code == 0 || !strings.Contains(errs, "port=*") {
		t.Errorf("deny one port of port=*: exit %d, %s", code, errs)
	}
	mustKin("friends", "deny", "dan", "port=*")
	if got, want := file(), junk+"\n"+brokenBob+"\n"+carolLine+"\n"+`name="dan" `+dan+"\n"; got != want {
		t.Fatalf("after deny port=*:\n%q\nwant\n%q", got, want)
	}
	for _, bad := range [][]string{
		{"friends", "allow", "bob", "shell"},    // broken line: fix it first
		{"friends", "allow", "nobody", "shell"}, // no such friend
		{"friends", "allow", "carol", "root"},   // no such permission
		{"friends", "deny", "carol"},            // nothing to deny
	} {
		before := file()
		if _, errs, code := kin(t, home, bad...); code == 0 || !strings.HasPrefix(errs, "kin: ") && !strings.Contains(errs, "\nkin: ") {
			t.Errorf("kin %v: exit %d, %q", bad, code, errs)
		}
		if file() != before {
			t.Errorf("kin %v changed the file", bad)
		}
	}

	// rm by name takes the broken line that names bob; the junk stays.
	if out, errs := mustKin("friends", "rm", "bob"); out != "removed bob\n" || strings.Contains(errs, "rm bob") {
		t.Errorf("rm bob: %q %q", out, errs)
	}
	if got, want := file(), junk+"\n"+carolLine+"\n"+`name="dan" `+dan+"\n"; got != want {
		t.Fatalf("after rm bob:\n%q\nwant\n%q", got, want)
	}
	if _, errs, code := kin(t, home, "friends", "rm", "bob"); code == 0 || !strings.Contains(errs, `no friend named "bob"`) {
		t.Errorf("second rm: exit %d, %q", code, errs)
	}
}

// A private key pasted where a public key goes is refused, and nothing of
// it is printed, however it was pasted.
func TestFriendsAddRefusesAPrivateKeyWithoutEchoingIt(t *testing.T) {
	home := t.TempDir()
	keyPath := filepath.Join(t.TempDir(), "id")
	if _, _, err := keys.LoadOrCreateIdentity(keyPath); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(keyPath)
	priv := strings.TrimSpace(string(b))
	lines := strings.Split(priv, "\n")
	body := strings.Join(lines[1:len(lines)-1], "")
	const rsaPEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----"
	for _, args := range [][]string{
		{"friends", "add", "bob", priv},                                    // quoted
		append([]string{"friends", "add", "bob"}, strings.Fields(priv)...), // unquoted: the shell splits it
		{"friends", "add", "bob", "--allow", "shell", priv},
		{"friends", "add", "bob", priv, "--allow", "shell"},
		{"friends", "add", "bob", body}, // the base64 alone
		{"friends", "add", "bob", lines[1]},
		{"friends", "add", priv, newKey(t)}, // in the name's place
		{"friends", "add", "--allow", priv, "bob"},
		append([]string{"friends", "add", "bob"}, strings.Fields(rsaPEM)...), // unquoted PEM
	} {
		out, errs, code := kin(t, home, args...)
		all := out + errs
		if code == 0 || !strings.Contains(errs, "private key") || !strings.Contains(errs, "kin id") {
			t.Errorf("exit %d, output %q", code, all)
		}
		for _, l := range lines {
			if strings.Contains(all, l) {
				t.Fatalf("output shows a line of the key: %q", all)
			}
		}
		for i := 0; i+12 <= len(body); i++ {
			if strings.Contains(all, body[i:i+12]) {
				t.Fatalf("output shows part of the key (%q): %q", body[i:i+12], all)
			}
		}
		if _, err := os.Stat(filepath.Join(home, "friends")); err == nil {
			t.Fatal("a friends file was written")
		}
	}
}
