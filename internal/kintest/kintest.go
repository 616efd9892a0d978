// Package kintest runs the real kin binary as people do, for the
// end-to-end tests (e2e/) and the benchmarks (bench/): it builds kin once,
// gives each user a home and an environment of their own (KIN_HOME, ICE on
// lo only unless told otherwise), runs commands to completion or in the
// background, waits for the lines they print, and starts signaling servers.
//
// It returns errors rather than failing a test: bench is a program, not a
// test. e2e/harness_test.go adapts it to *testing.T.
package kintest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"kin/internal/netns"
)

// Build builds the kin command (the module's root package) into dir and
// returns the binary's path. It works from any directory of the module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "kin")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "kin").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kin (from inside the repository): %w\n%s", err, out)
	}
	return bin, nil
}

// Sources lists the files the kin binary is built from (its packages' Go
// files outside the standard library, go.mod and go.sum). go test's cache
// reruns a test only when its own binary, or a file or variable the test
// consulted, changed; the kin a test runs is another binary, so a test
// stats these (Consult) to be run again whenever kin's code changes.
func Sources(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f",
		"{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}\n{{end}}{{end}}", "kin").Output()
	if err != nil {
		return nil, fmt.Errorf("list kin's source files: %w", err)
	}
	files := strings.Fields(string(out))
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("find go.mod: %w", err)
	}
	m := strings.TrimSpace(string(mod))
	return append(files, m, filepath.Join(filepath.Dir(m), "go.sum")), nil
}

// Consult stats files, which go test records as files the running test
// consulted (only once the tests run: not from TestMain before m.Run).
func Consult(files []string) {
	for _, f := range files {
		os.Stat(f)
	}
}

// User is one person's kin: the binary, a home of their own, the whole
// environment kin runs with, and the network namespace their machine is.
type User struct {
	Bin  string
	Name string
	Home string   // KIN_HOME
	Env  []string // os.Environ() with the user's settings; each key once
	NS   string   // network namespace to run in (ip netns exec); "" is this one
}

// NewUser makes a user whose home is dir/name, with kin's ICE on lo only
// (two peers on one machine) and USER=name; env ("KEY=value") adds or
// replaces settings, e.g. "KIN_SIGNAL=ws://...", or "KIN_ICE_INTERFACES="
// for every interface of a lab namespace.
func NewUser(bin, dir, name string, env ...string) *User {
	u := &User{Bin: bin, Name: name, Home: filepath.Join(dir, name), Env: os.Environ()}
	u.Setenv("KIN_HOME", u.Home)
	u.Setenv("KIN_ICE_INTERFACES", "lo")
	u.Setenv("USER", name)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		u.Setenv(k, v)
	}
	return u
}

// Setenv sets key to value in the user's environment.
func (u *User) Setenv(key, value string) {
	for i, kv := range u.Env {
		if strings.HasPrefix(kv, key+"=") {
			u.Env[i] = key + "=" + value
			return
		}
	}
	u.Env = append(u.Env, key+"="+value)
}

// Command is a kin command line of u's, in u's namespace, not started.
func (u *User) Command(ctx context.Context, args ...string) *exec.Cmd {
	var c *exec.Cmd
	if u.NS != "" {
		c = netns.Command(ctx, u.NS, u.Bin, args...)
	} else {
		c = exec.CommandContext(ctx, u.Bin, args...)
	}
	c.Env = u.Env
	return c
}

// Run runs kin to completion and returns its stdout, stderr and exit
// code. The error says kin could not run, or ctx ended first; a non-zero
// exit is not an error here.
func (u *User) Run(ctx context.Context, args ...string) (stdout, stderr string, code int, err error) {
	c := u.Command(ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err = c.Run()
	if ctx.Err() != nil {
		return out.String(), errb.String(), -1, fmt.Errorf("kin %s: %w\n%s%s", strings.Join(args, " "), ctx.Err(), &out, &errb)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), errb.String(), -1, fmt.Errorf("kin %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), 0, nil
}

// Start starts kin in the background; ctx ending kills it.
func (u *User) Start(ctx context.Context, args ...string) (*Proc, error) {
	return Start(u.Command(ctx, args...))
}

// SignalRE matches the line `kin signal` prints when it serves; its
// submatch is the URL.
const SignalRE = `signaling server on (wss?://\S+)`

// StartSignal runs `kin signal` with args (e.g. "--listen",
// "127.0.0.1:0") as u and returns its URL once it serves. It waits up to
// timeout; on failure the server is stopped and the error has its output.
func StartSignal(ctx context.Context, u *User, timeout time.Duration, args ...string) (string, *Proc, error) {
	p, err := u.Start(ctx, append([]string{"signal"}, args...)...)
	if err != nil {
		return "", nil, err
	}
	m, err := p.WaitFor(SignalRE, timeout)
	if err != nil {
		p.Kill()
		return "", nil, err
	}
	return m[1], p, nil
}

// Proc is a program running in the background, its output kept in lines
// (stdout and stderr together).
type Proc struct {
	Cmd *exec.Cmd

	mu    sync.Mutex
	lines []string
	grew  chan struct{} // closed and replaced when a line arrives
	done  chan struct{} // closed when the program has exited and its output is read
	err   error         // from Cmd.Wait, once done
}

// Start starts cmd (any program: kin, or a daemon a test talks to) and
// collects its output. cmd's Stdout and Stderr must be unset.
func Start(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Cmd: cmd, grew: make(chan struct{}), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(r)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				p.mu.Lock()
				p.lines = append(p.lines, sc.Text())
				close(p.grew)
				p.grew = make(chan struct{})
				p.mu.Unlock()
			}
			io.Copy(io.Discard, r) // a line too long: never block the program on a full pipe
		}()
	}
	go func() {
		wg.Wait() // all output read before Wait closes the pipes
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Output is everything the program printed so far, one line after another.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// WaitFor waits up to timeout for a line (printed at any time, also
// before the call) that matches re and returns its submatches. The error
// says the program exited first or the time ran out, with its output.
func (p *Proc) WaitFor(re string, timeout time.Duration) ([]string, error) {
	rx, err := regexp.Compile(re)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for seen := 0; ; {
		p.mu.Lock()
		lines, grew := p.lines, p.grew
		p.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if m := rx.FindStringSubmatch(lines[seen]); m != nil {
				return m, nil
			}
		}
		select {
		case <-grew:
		case <-p.done:
			// Every line is in once done is closed: look at the last ones.
			p.mu.Lock()
			more := len(p.lines) > seen
			p.mu.Unlock()
			if more {
				continue
			}
			return nil, fmt.Errorf("%s exited (%v) before printing %q:\n%s", p, p.err, re, p.Output())
		case <-deadline.C:
			return nil, fmt.Errorf("%s: no line matching %q after %v:\n%s", p, re, timeout, p.Output())
		}
	}
}

// String is the command line as people would type it: "kin share 3000".
func (p *Proc) String() string {
	args := p.Cmd.Args
	if len(args) > 4 && args[0] == "ip" && args[1] == "netns" { // ip netns exec NS program ...
		args = args[4:]
	}
	return strings.Join(append([]string{filepath.Base(args[0])}, args[1:]...), " ")
}

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to timeout for the program to exit and returns its exit
// code (-1 if a signal ended it).
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return -1, fmt.Errorf("%s did not exit within %v:\n%s", p, timeout, p.Output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	if p.err != nil {
		return -1, p.err
	}
	return 0, nil
}

// Interrupt sends SIGINT, as Ctrl-C does.
func (p *Proc) Interrupt() { p.Cmd.Process.Signal(syscall.SIGINT) }

// Kill kills the program and waits until it is gone.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.done
}

// Stop interrupts the program and kills it if it has not exited within
// grace.
func (p *Proc) Stop(grace time.Duration) {
	p.Interrupt()
	if _, err := p.Wait(grace); err != nil {
		p.Kill()
	}
}
