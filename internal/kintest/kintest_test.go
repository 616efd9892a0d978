package kintest

import (
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A program's lines, from stdout and stderr, are found whether they came
// before or after the wait began, and after it exited; its exit code is
// reported; a line it never prints is an error that carries its output.
func TestProcLinesAndExit(t *testing.T) {
	cmd := exec.Command("sh", "-c", `echo "first 1"; echo "to stderr" >&2; read x; echo "late $x"; exit 3`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := p.WaitFor(`^first (\d)$`, time.Minute); err != nil || m[1] != "1" {
		t.Fatalf("first line: %v %v", m, err)
	}
	if _, err := p.WaitFor(`to stderr`, time.Minute); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "yes\n")
	if m, err := p.WaitFor(`^late (\w+)$`, time.Minute); err != nil || m[1] != "yes" {
		t.Fatalf("late line: %v %v", m, err)
	}
	if code, err := p.Wait(time.Minute); err != nil || code != 3 {
		t.Fatalf("exit code %d, err %v; want 3", code, err)
	}
	_, err = p.WaitFor(`never`, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "sh -c") || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "late yes") {
		t.Fatalf("waiting for a line after the exit: %v", err)
	}
}

// Stop interrupts a program that runs on; a wait that runs out says so.
func TestProcStop(t *testing.T) {
	p, err := Start(exec.Command("sleep", "600"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor(`never`, time.Millisecond); err == nil || !strings.Contains(err.Error(), "no line matching") {
		t.Fatalf("WaitFor of a silent program: %v", err)
	}
	p.Stop(time.Minute)
	select {
	case <-p.Done():
	default:
		t.Fatal("Stop returned with the program still running")
	}
}

// Settings given to NewUser replace the environment's, each key once.
func TestNewUserEnv(t *testing.T) {
	t.Setenv("KIN_SIGNAL", "ws://from-the-shell")
	u := NewUser("/bin/kin", "/tmp/x", "alice", "KIN_SIGNAL=ws://127.0.0.1:1", "KIN_ICE_INTERFACES=")
	want := map[string]string{"KIN_HOME": "/tmp/x/alice", "USER": "alice", "KIN_SIGNAL": "ws://127.0.0.1:1", "KIN_ICE_INTERFACES": ""}
	seen := map[string]int{}
	for _, kv := range u.Env {
		k, v, _ := strings.Cut(kv, "=")
		seen[k]++
		if w, ok := want[k]; ok && v != w {
			t.Errorf("%s=%q, want %q", k, v, w)
		}
	}
	for k := range want {
		if seen[k] != 1 {
			t.Errorf("%s appears %d times", k, seen[k])
		}
	}
}
