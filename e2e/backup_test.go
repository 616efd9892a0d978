package e2e

// End-to-end tests of backups over kin with the real tools: rsync and
// restic (sftp backend) through OpenSSH's ssh with kin pipe as its
// ProxyCommand, exactly as `kin ssh-config dad >> ~/.ssh/config` sets up.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sshConfigFor writes the block `kin ssh-config dad` prints to a file, for
// ssh -F (the tests must not touch the real ~/.ssh/config).
func sshConfigFor(t *testing.T, a *agentEnv) string {
	t.Helper()
	config := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(config, []byte(a.kid.mustRun("ssh-config", "dad")), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}

// backupTool runs one of the kid's tools (rsync, restic, ssh) with the
// kid's environment, and returns its combined output.
func backupTool(t *testing.T, a *agentEnv, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(append([]string{}, a.kid.Env...), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// randomTree makes a directory of random files (one in a subdirectory, one
// executable, one with an old mtime) and returns its files' SHA-256 sums.
func randomTree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	for name, size := range map[string]int{"2026/a.jpg": 1 << 20, "b.jpg": 300 << 10, "run.sh": 100, "empty": 0} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, size)
		rand.Read(b)
		mode := fs.FileMode(0o644)
		if name == "run.sh" {
			mode = 0o755
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
		sums[name] = sha256.Sum256(b)
	}
	old := time.Date(2020, 2, 29, 12, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "b.jpg"), old, old)
	return sums
}

// sameTree checks dir has exactly the files of sums, and the modes and
// mtimes of src.
func sameTree(t *testing.T, src, dir string, sums map[string][32]byte) {
	t.Helper()
	for name, want := range sums {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("%s in %s: %v, or its SHA-256 differs", name, dir, err)
		}
		si, _ := os.Stat(filepath.Join(src, name))
		di, _ := os.Stat(filepath.Join(dir, name))
		if si.Mode() != di.Mode() || !si.ModTime().Equal(di.ModTime()) {
			t.Errorf("%s: mode %v mtime %v, want %v %v", name, di.Mode(), di.ModTime(), si.Mode(), si.ModTime())
		}
	}
}

func TestRsyncBothWaysThroughKin(t *testing.T) {
	requireTool(t, "ssh")
	requireTool(t, "rsync")
	a := startAgent(t)
	rsh := "ssh -F " + sshConfigFor(t, a) + " -o BatchMode=yes"
	src := filepath.Join(t.TempDir(), "Photos")
	sums := randomTree(t, src)
	// kid -> dad: rsync -a ~/Photos dad:backup/
	backup := filepath.Join(t.TempDir(), "backup")
	if out, err := backupTool(t, a, nil, "rsync", "-a", "-e", rsh, src, "dad:"+backup+"/"); err != nil {
		t.Fatalf("rsync to dad: %v\n%s", err, out)
	}
	sameTree(t, src, filepath.Join(backup, "Photos"), sums)
	// A change, then a second run sends only that file.
	changed := make([]byte, 200<<10)
	rand.Read(changed)
	os.WriteFile(filepath.Join(src, "b.jpg"), changed, 0o644)
	sums["b.jpg"] = sha256.Sum256(changed)
	out, err := backupTool(t, a, nil, "rsync", "-a", "--itemize-changes", "-e", rsh, src, "dad:"+backup+"/")
	if err != nil {
		t.Fatalf("second rsync to dad: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != "<f.st...... Photos/b.jpg" {
		t.Errorf("second run should send only b.jpg, rsync said:\n%s", out)
	}
	sameTree(t, src, filepath.Join(backup, "Photos"), sums)
	// dad -> kid: restore the backup.
	restored := filepath.Join(t.TempDir(), "restored")
	if out, err := backupTool(t, a, nil, "rsync", "-a", "-e", rsh, "dad:"+backup+"/Photos/", restored+"/"); err != nil {
		t.Fatalf("rsync from dad: %v\n%s", err, out)
	}
	sameTree(t, src, restored, sums)
}

func TestRsyncResumesAfterKill(t *testing.T) {
	requireTool(t, "ssh")
	requireTool(t, "rsync")
	a := startAgent(t)
	rsh := "ssh -F " + sshConfigFor(t, a) + " -o BatchMode=yes"
	src := filepath.Join(t.TempDir(), "big.bin")
	data := make([]byte, 24<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	backup := t.TempDir()
	// A slow first run (--bwlimit in KiB/s), killed once dad has part of it.
	first := exec.Command("rsync", "-a", "--partial", "--bwlimit=4096", "-e", rsh, src, "dad:"+backup+"/")
	first.Env = a.kid.Env
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	// rsync receives into a temporary ".big.bin.XXXXXX" next to the target.
	temp := regexp.MustCompile(`^\.big\.bin\.`)
	grown := func() bool {
		ents, _ := os.ReadDir(backup)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && temp.MatchString(e.Name()) && fi.Size() >= 1<<20 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for !grown() {
		select {
		case err := <-exited:
			t.Fatalf("rsync ended before it was killed (%v):\n%s", err, firstOut.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dad never got a MiB of big.bin:\n%s", firstOut.String())
		}
	}
	first.Process.Kill()
	<-exited
	// Dad's rsync, cut off, keeps what it has as big.bin (--partial).
	partial := filepath.Join(backup, "big.bin")
	deadline = time.Now().Add(30 * time.Second)
	for {
		fi, err := os.Stat(partial)
		ents, _ := os.ReadDir(backup)
		if err == nil && len(ents) == 1 {
			if fi.Size() >= int64(len(data)) {
				t.Fatalf("the whole file arrived before the kill (%d bytes); nothing to resume", fi.Size())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dad's rsync did not keep the partial file: %v, %d entries", err, len(ents))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The rerun uses the partial file: part of big.bin is matched, not sent.
	out, err := backupTool(t, a, nil, "rsync", "-a", "--partial", "--stats", "-e", rsh, src, "dad:"+backup+"/")
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Matched data: ([\d,]+) bytes`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Matched data in rsync --stats:\n%s", out)
	}
	if n, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", "")); n == 0 {
		t.Errorf("the rerun sent everything again:\n%s", out)
	}
	got, _ := os.ReadFile(partial)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("big.bin at dad's differs after the resumed rsync (%d of %d bytes)", len(got), len(data))
	}
}

// startAgentAllowing is startAgent with the kid allowed only what allow
// says, and dad's backups folder at backups.
func startAgentAllowing(t *testing.T, backups string, allow ...string) *agentEnv {
	url, _ := startSignal(t)
	a := &agentEnv{inbox: filepath.Join(t.TempDir(), "inbox")}
	a.dad = newUser(t, "dad", "KIN_SIGNAL="+url)
	a.kid = newUser(t, "kid", "KIN_SIGNAL="+url)
	args := []string{"friends", "add", "kid", strings.TrimSpace(a.kid.mustRun("id"))}
	for _, p := range allow {
		args = append(args, "--allow", p)
	}
	a.dad.mustRun(args...)
	a.kid.mustRun("friends", "add", "dad", strings.TrimSpace(a.dad.mustRun("id")))
	a.agent = a.dad.start("up", "--dir", a.inbox, "--backups", backups, "--allow-root-shell")
	a.agent.waitFor(`kin is up`)
	return a
}

func TestResticSFTPThroughKin(t *testing.T) {
	requireTool(t, "ssh")
	requireTool(t, "restic")
	a := startAgent(t)
	repo := filepath.Join(t.TempDir(), "restic-repo")
	resticRoundTrip(t, a, "sftp:dad:"+repo, repo)
}

// A friend who may only send files (no shell) backs up with restic into a
// folder of their own at dad's, and can do nothing else there.
func TestResticWithFilesPermissionOnly(t *testing.T) {
	requireTool(t, "ssh")
	requireTool(t, "restic")
	requireTool(t, "rsync")
	backups := filepath.Join(t.TempDir(), "kin-backups")
	a := startAgentAllowing(t, backups, "files")
	resticRoundTrip(t, a, "sftp:dad:photos", filepath.Join(backups, "kid", "photos"))
	// The folder is all they reach: no commands, so no rsync either.
	config := sshConfigFor(t, a)
	marker := filepath.Join(t.TempDir(), "ran")
	out, err := backupTool(t, a, nil, "ssh", "-F", config, "-o", "BatchMode=yes", "dad", "touch "+marker)
	if err == nil {
		t.Fatalf("a command ran for a files-only friend:\n%s", out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran")
	}
	if !strings.Contains(out, "may not open a shell here") {
		t.Errorf("ssh said:\n%s", out)
	}
	out, err = backupTool(t, a, nil, "rsync", "-a", "-e", "ssh -F "+config+" -o BatchMode=yes", config, "dad:x/")
	if err == nil {
		t.Fatalf("rsync worked without permit-shell:\n%s", out)
	}
	if !strings.Contains(out, "you are allowed files only") {
		t.Errorf("rsync does not say why it failed:\n%s", out)
	}
}

// resticRoundTrip runs restic init, backup, check and restore against repo
// and checks the repository is at dir on dad's side and the restored
// files' SHA-256, modes and times.
func resticRoundTrip(t *testing.T, a *agentEnv, repo, dir string) {
	t.Helper()
	config := sshConfigFor(t, a)
	env := []string{
		"RESTIC_PASSWORD=correct horse battery staple",
		"RESTIC_REPOSITORY=" + repo,
		"RESTIC_CACHE_DIR=" + filepath.Join(t.TempDir(), "cache"),
	}
	// What restic runs by default, plus the test's ssh config file.
	sftpCmd := "sftp.command=ssh -F " + config + " -o BatchMode=yes dad -s sftp"
	restic := func(args ...string) string {
		t.Helper()
		out, err := backupTool(t, a, env, "restic", append([]string{"-o", sftpCmd}, args...)...)
		if err != nil {
			t.Fatalf("restic %v: %v\n%s", args, err, out)
		}
		return out
	}
	src := filepath.Join(t.TempDir(), "Photos")
	sums := randomTree(t, src)
	restic("init")
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		t.Fatalf("no repository at dad's: %v", err)
	}
	restic("backup", src)
	restic("check", "--read-data")
	target := t.TempDir()
	restic("restore", "latest", "--target", target)
	sameTree(t, src, filepath.Join(target, src), sums)
}

// Remote commands see the environment sshd would give them: who they run
// as, their home and shell, even when the agent was started without them
// (as by a service manager).
func TestRemoteEnvironmentLikeSSHD(t *testing.T) {
	requireTool(t, "ssh")
	me, err := osuser.Current()
	if err != nil {
		t.Skip(err)
	}
	url, _ := startSignal(t)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	var bare []string
	for _, e := range dad.Env {
		switch strings.SplitN(e, "=", 2)[0] {
		case "USER", "LOGNAME", "HOME", "SHELL":
		default:
			bare = append(bare, e)
		}
	}
	dad.Env = bare
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", "shell")
	dad.start("up", "--dir", filepath.Join(t.TempDir(), "inbox"), "--allow-root-shell").waitFor(`kin is up`)
	a := &agentEnv{dad: dad, kid: kid}
	out, err := backupTool(t, a, nil, "ssh", "-F", sshConfigFor(t, a), "-o", "BatchMode=yes", "dad",
		`echo "user=$USER logname=$LOGNAME home=$HOME shell=$SHELL pwd=$(pwd)"`)
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	want := "user=" + me.Username + " logname=" + me.Username + " home=" + me.HomeDir + " shell=/bin/sh pwd=" + me.HomeDir
	if strings.TrimSpace(out) != want {
		t.Fatalf("remote environment:\n got %s\nwant %s", strings.TrimSpace(out), want)
	}
}
