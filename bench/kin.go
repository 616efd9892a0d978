package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kinLab runs kin processes side by side, each with ICE on its host's one
// interface: on the server host a signaling server, and alice sharing and
// running an agent; on the client host bob, connecting and sending.
type kinLab struct {
	ctx            context.Context
	server, client host
	profile        string // KIN_PROFILE for every process, if set
	dir            string
	kin            string
	url            string
	inbox          string
	procs          []*kinProc
	// lane is KIN_LANE for the client's processes (bob's connect and
	// send): "datachannel" keeps them off QUIC, whatever the agent offers.
	lane string
	// lanes is KIN_LANES for bob's send: a forced lane count ("": adapt).
	lanes string
}

type kinProc struct {
	cmd    *exec.Cmd
	exited chan struct{}

	mu    sync.Mutex
	lines []string
}

func (p *kinProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// laneRE finds the lane in the transport's log line (KIN_VERBOSE).
var laneRE = regexp.MustCompile(`msg="peer connection" .*lane="([^"]+)"`)

// checkLane says whether kin's verbose output shows the lane the row is
// named for.
func (l *kinLab) checkLane(out string) error {
	m := laneRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no lane in kin's log:\n%s", out)
	}
	want := "QUIC"
	if l.lane == "datachannel" {
		want = "data channel"
	}
	if !strings.HasSuffix(m[1], want) {
		return fmt.Errorf("kin used %q, the row measures %s", m[1], want)
	}
	return nil
}

// on returns the host kin runs on with home.
func (l *kinLab) on(home string) host {
	if home == "b" {
		return l.client
	}
	return l.server
}

func (l *kinLab) env(home string) []string {
	env := append(os.Environ(), "KIN_HOME="+filepath.Join(l.dir, home), "KIN_ICE_INTERFACES="+l.on(home).iface(), "KIN_SIGNAL="+l.url)
	if l.profile != "" {
		env = append(env, "KIN_PROFILE="+l.profile)
	}
	env = append(env, "KIN_LANE=") // the agent offers QUIC: a lane setting of the caller's does not leak in
	if home == "b" && l.lane != "" {
		env = append(env, "KIN_LANE="+l.lane)
	}
	env = append(env, "KIN_LANES=")
	if home == "b" && l.lanes != "" {
		env = append(env, "KIN_LANES="+l.lanes)
	}
	return env
}

func (l *kinLab) run(home string, args ...string) (string, error) {
	c := l.on(home).command(l.ctx, l.kin, args...)
	c.Env = l.env(home)
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kin %s: %v %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// spawn starts kin in the background and returns the first line matching wantRE.
func (l *kinLab) spawn(home, wantRE string, args ...string) ([]string, error) {
	c := l.on(home).command(l.ctx, l.kin, args...)
	c.Env = l.env(home)
	r, w := io.Pipe()
	c.Stdout, c.Stderr = w, w
	if err := c.Start(); err != nil {
		return nil, err
	}
	p := &kinProc{cmd: c, exited: make(chan struct{})}
	l.procs = append(l.procs, p)
	rx := regexp.MustCompile(wantRE)
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if m := rx.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
	}()
	go func() { c.Wait(); w.Close(); close(p.exited) }()
	select {
	case m := <-found:
		return m, nil
	case <-p.exited:
		return nil, fmt.Errorf("kin %s exited: %s", strings.Join(args, " "), p.output())
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("kin %s: no line matching %q", strings.Join(args, " "), wantRE)
	}
}

// id returns what kin id prints on stdout (a new identity is also logged,
// on stderr).
func (l *kinLab) id(home string) (string, error) {
	c := l.on(home).command(l.ctx, l.kin, "id")
	c.Env = l.env(home)
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("kin id: %v", err)
	}
	return string(out), nil
}

func (l *kinLab) start() error {
	m, err := l.spawn("server", `signaling server on (ws://\S+)`, "signal", "--listen", l.server.ip()+":0")
	if err != nil {
		return err
	}
	l.url = m[1]
	aKey, err := l.id("a")
	if err != nil {
		return err
	}
	bKey, err := l.id("b")
	if err != nil {
		return err
	}
	if _, err := l.run("a", "friends", "add", "b", strings.TrimSpace(bKey), "--allow", "files"); err != nil {
		return err
	}
	if _, err := l.run("b", "friends", "add", "a", strings.TrimSpace(aKey)); err != nil {
		return err
	}
	l.inbox = filepath.Join(l.dir, "inbox")
	_, err = l.spawn("a", `kin is up`, "up", "--dir", l.inbox)
	return err
}

// share shares port from a and returns the ticket.
func (l *kinLab) share(port int) (string, error) {
	m, err := l.spawn("a", `^kin connect (kin1\S+)`, "share", fmt.Sprint(port))
	if err != nil {
		return "", err
	}
	return m[1], nil
}

// connect runs kin connect with the ticket and returns the forward's
// address, having checked the lane it uses.
func (l *kinLab) connect(ticket string) (string, error) {
	m, err := l.spawn("b", `forwarding (\S+) ->`, "--verbose", "connect", ticket, "--listen", l.client.ip()+":0")
	if err != nil {
		return "", err
	}
	if err := l.checkLane(l.procs[len(l.procs)-1].output()); err != nil {
		return "", err
	}
	return m[1], nil
}

// connectFirstByte starts kin connect with the ticket and returns the time
// from starting it to the first byte read through the forward, then stops it.
func (l *kinLab) connectFirstByte(ticket string) (time.Duration, error) {
	local := fmt.Sprintf("%s:%d", l.client.ip(), l.client.freePort())
	c := l.client.command(l.ctx, l.kin, "connect", ticket, "--listen", local)
	c.Env = l.env("b")
	start := time.Now()
	if err := c.Start(); err != nil {
		return 0, err
	}
	defer func() {
		c.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}()
	return firstByte(l.ctx, l.client, local, start)
}

// sentLanesRE finds the most lanes a send used in its log (KIN_VERBOSE).
var sentLanesRE = regexp.MustCompile(`msg="files sent" .*lanes=(\d+)`)

// send runs kin send of file from b to a's agent and returns MB/s and the
// most lanes it used at once.
func (l *kinLab) send(file string, size int64) (float64, int, error) {
	os.RemoveAll(l.inbox) // or the file would already be there
	start := time.Now()
	out, err := l.run("b", "--verbose", "send", file, "a", "--quiet")
	if err != nil {
		return 0, 0, err
	}
	el := time.Since(start)
	if err := l.checkLane(out); err != nil {
		return 0, 0, err
	}
	if st, err := os.Stat(filepath.Join(l.inbox, filepath.Base(file))); err != nil || st.Size() != size {
		return 0, 0, fmt.Errorf("the file did not arrive whole: %v", err)
	}
	m := sentLanesRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no lane count in kin's log:\n%s", out)
	}
	lanes, _ := strconv.Atoi(m[1])
	return float64(size) / 1e6 / el.Seconds(), lanes, nil
}

func (l *kinLab) stop() { l.stopFrom(0) }

// stopFrom stops the processes started from index i on.
func (l *kinLab) stopFrom(i int) {
	procs := l.procs[i:]
	l.procs = l.procs[:i]
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGINT)
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}
