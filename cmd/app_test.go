package cmd

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// kin --version says which build this is: a stamped version, or else
// what the toolchain recorded; never the bare "dev" of old.
func TestVersion(t *testing.T) {
	info := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "kin", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	vcs := []string{"vcs", "git", "vcs.revision", "25eadb7abcdef0123456789", "vcs.time", "2026-11-27T01:55:32Z", "vcs.modified", "false"}
	dirty := []string{"vcs.revision", "25eadb7abcdef0123456789", "vcs.modified", "true"}
	cases := []struct {
		stamped, date string
		bi            *debug.BuildInfo
		want          string
	}{
		{"v1.2.0", "2026-11-27T02:00:00Z", nil, "v1.2.0 (built 2026-11-27T02:00:00Z)"},
		{"v1.2.0", "", info("(devel)", vcs...), "v1.2.0 (revision 25eadb7abcde, committed 2026-11-27T01:55:32Z)"},
		{"", "", info("v0.0.0-20261127015532-25eadb7abcde", vcs...), "v0.0.0-20261127015532-25eadb7abcde (revision 25eadb7abcde, committed 2026-11-27T01:55:32Z)"},
		{"dev", "", info("v0.0.0-20261127015532-25eadb7abcde+dirty", dirty...), "v0.0.0-20261127015532-25eadb7abcde+dirty (revision 25eadb7abcde with uncommitted changes)"},
		{"", "", info("(devel)", dirty...), "devel-25eadb7abcde-dirty (revision 25eadb7abcde with uncommitted changes)"},
		{"", "", info("v1.3.0"), "v1.3.0"},
	}
	for _, c := range cases {
		if got := describeVersion(c.stamped, c.date, c.bi); got != c.want {
			t.Errorf("describeVersion(%q, %q, %v) = %q, want %q", c.stamped, c.date, c.bi, got, c.want)
		}
	}
	for _, bi := range []*debug.BuildInfo{nil, info("(devel)"), info("")} {
		if got := describeVersion("dev", "", bi); !strings.HasPrefix(got, "unknown (built without version or VCS information") {
			t.Errorf("no information: %q", got)
		}
	}

	// Through the command line, with a stamped version as release builds do.
	defer func(v, d string) { Version, BuildDate = v, d }(Version, BuildDate)
	Version, BuildDate = "v9.9.9", "2026-11-27T02:00:00Z"
	out, _, code := kin(t, t.TempDir(), "--version")
	if want := "kin version v9.9.9 (built 2026-11-27T02:00:00Z"; code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("kin --version: exit %d, %q, want %q...", code, out, want)
	}
}

// The first command makes an identity and says so in a sentence, once;
// nothing kin id prints is a log line.
func TestFirstRunNoticeIsASentence(t *testing.T) {
	home := t.TempDir()
	out, errs, code := kin(t, home, "id")
	if code != 0 {
		t.Fatalf("kin id: exit %d: %s", code, errs)
	}
	if !strings.HasPrefix(out, "ssh-ed25519 AAAA") || strings.Count(out, "\n") != 1 {
		t.Errorf("stdout is not one key line: %q", out)
	}
	want := "kin made you a new identity, kin ID "
	if !strings.HasPrefix(errs, want) || !strings.Contains(errs, filepath.Join(home, "identity")) {
		t.Errorf("first run: stderr %q, want it to start with %q and name the file", errs, want)
	}
	if strings.Contains(errs, "level=") || strings.Contains(errs, "msg=") {
		t.Errorf("log line in kin id's output: %q", errs)
	}
	_, errs, _ = kin(t, home, "id")
	if strings.Contains(errs, "new identity") {
		t.Errorf("second run announces a new identity again: %q", errs)
	}
}

// A signaling server address that is no such thing is refused with the
// hint that shows how to write one.
func TestBadSignalURLGetsTheHint(t *testing.T) {
	_, errs, code := kin(t, t.TempDir(), "--signal", "http://127.0.0.1:7000", "status")
	if code != 1 || !strings.Contains(errs, "hint: write KIN_SIGNAL (or --signal) as ws://HOST:PORT") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// Every command that needs a signaling server shared with friends says
// the same when there is none.
func TestNoSignalingServerIsOneError(t *testing.T) {
	t.Setenv("KIN_SIGNAL", "")
	home := t.TempDir()
	if _, errs, code := kin(t, home, "friends", "add", "bob", newKey(t), "--allow", "shell"); code != 0 {
		t.Fatal(errs)
	}
	const want = "kin: no signaling server configured\nhint: set the server you and your friends use, e.g. KIN_SIGNAL=ws://HOST:7000 (or --signal): one of you runs it with kin signal"
	kin(t, home, "id") // the first-run notice is not what this test reads
	file := filepath.Join(t.TempDir(), "f.txt")
	os.WriteFile(file, []byte("x"), 0o600)
	for _, args := range [][]string{{"shell", "bob", "--", "true"}, {"up", "--dir", t.TempDir()}, {"doctor"}, {"doctor", "bob"},
		{"send", file, "bob"}, {"receive", "--dir", t.TempDir()}, {"connect", "bob:3000"}} {
		_, errs, code := kin(t, home, args...)
		if code != 1 || !strings.HasPrefix(errs, want) {
			t.Errorf("kin %v: exit %d\n%s\nwant it to start with\n%s", args, code, errs, want)
		}
	}
}

// kin status, with the signaling server given as HOST:PORT: it reaches the
// server, says in words what each friend may use here, and counts the
// unfinished files in the inbox.
func TestStatus(t *testing.T) {
	home, inbox := t.TempDir(), t.TempDir()
	if _, errs, code := kin(t, home, "friends", "add", "bob", newKey(t), "--allow", "shell,files,port=3000"); code != 0 {
		t.Fatal(errs)
	}
	if _, errs, code := kin(t, home, "friends", "add", "dad", newKey(t)); code != 0 {
		t.Fatal(errs)
	}
	part := filepath.Join(inbox, ".kin-partial")
	os.MkdirAll(part, 0o700)
	os.WriteFile(filepath.Join(part, "a.part"), make([]byte, 1000), 0o600)
	os.WriteFile(filepath.Join(part, "b.part"), make([]byte, 500), 0o600)

	url := serveSignalForTest(t)
	out, errs, code := kin(t, home, "--signal", strings.TrimPrefix(url, "ws://"), "status", "--dir", inbox)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"inbox:     " + inbox + ": 2 unfinished files hold 1.5 kB in " + part + " (sending them again resumes them",
		"signaling: " + url + ": reachable",
		"FRIEND  ONLINE  MAY USE ON THIS COMPUTER\n",
		"bob     no      shell, files (send you files, back up here), port 3000\n",
		"dad     no      nothing (you can still use theirs, as far as they allow you)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(errs, "level=") {
		t.Errorf("log lines in status: %s", errs)
	}

	// Without a signaling server: the inbox, and friends, online unknown.
	t.Setenv("KIN_SIGNAL", "")
	os.RemoveAll(part)
	out, _, _ = kin(t, home, "status", "--dir", inbox)
	for _, want := range []string{
		"inbox:     " + inbox + ": no unfinished files\n",
		"signaling: none configured",
		"bob     ?       shell, files (send you files, back up here), port 3000\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status without a server lacks %q:\n%s", want, out)
		}
	}

	// A scheme kin does not speak is refused, with what to write.
	_, errs, code = kin(t, home, "--signal", "http://"+strings.TrimPrefix(url, "ws://"), "status")
	if code != 1 || !strings.Contains(errs, "hint: write KIN_SIGNAL (or --signal) as ws://HOST:PORT") {
		t.Errorf("http:// signal: exit %d: %s", code, errs)
	}
}

// kin demo works on this machine and ends by saying what to run on two.
func TestDemoEndsWithTheRealThing(t *testing.T) {
	out, errs, code := kin(t, t.TempDir(), "demo")
	if code != 0 {
		t.Fatalf("kin demo: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"ok: bob fetched alice's page", "alice:  kin share 8000", "bob:    kin connect kin1...", "kin signal --listen :7000 --turn :3478", "KIN_SIGNAL=ws://"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, demoNext) {
		t.Errorf("demo does not end with what to run on two computers:\n%s", out)
	}
}
