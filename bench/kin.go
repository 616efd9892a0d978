package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"kin/internal/kintest"
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
	procs          []*kintest.Proc
	// lane is KIN_LANE for the client's processes (bob's connect and
	// send): "datachannel" keeps them off QUIC, whatever the agent offers.
	lane string
	// lanes is KIN_LANES for bob's send: a forced lane count ("": adapt).
	lanes string
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

// user is home's kin (a, b or server), with ICE on its host's one interface.
func (l *kinLab) user(home string) *kintest.User {
	h := l.on(home)
	env := []string{"KIN_ICE_INTERFACES=" + h.iface(), "KIN_SIGNAL=" + l.url,
		"KIN_LANE="} // the agent offers QUIC: a lane setting of the caller's does not leak in
	if l.profile != "" {
		env = append(env, "KIN_PROFILE="+l.profile)
	}
	if home == "b" && l.lane != "" {
		env = append(env, "KIN_LANE="+l.lane)
	}
	env = append(env, "KIN_LANES=")
	if home == "b" && l.lanes != "" {
		env = append(env, "KIN_LANES="+l.lanes)
	}
	u := kintest.NewUser(l.kin, l.dir, home, env...)
	if h.side != nil {
		u.NS = h.side.NS
	}
	return u
}

// run runs kin to completion and returns its stdout and stderr.
func (l *kinLab) run(home string, args ...string) (string, string, error) {
	out, errs, code, err := l.user(home).Run(l.ctx, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("kin %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out, errs, err
}

// spawn starts kin in the background and returns the first line matching wantRE.
func (l *kinLab) spawn(home, wantRE string, args ...string) ([]string, error) {
	p, err := l.user(home).Start(l.ctx, args...)
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	return p.WaitFor(wantRE, 60*time.Second)
}

func (l *kinLab) start() error {
	u := l.user("server")
	url, p, err := kintest.StartSignal(l.ctx, u, 60*time.Second, "--listen", l.server.ip()+":0")
	if err != nil {
		return err
	}
	l.procs = append(l.procs, p)
	l.url = url
	aKey, _, err := l.run("a", "id")
	if err != nil {
		return err
	}
	bKey, _, err := l.run("b", "id")
	if err != nil {
		return err
	}
	if _, _, err := l.run("a", "friends", "add", "b", strings.TrimSpace(bKey), "--allow", "files"); err != nil {
		return err
	}
	if _, _, err := l.run("b", "friends", "add", "a", strings.TrimSpace(aKey)); err != nil {
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
	if err := l.checkLane(l.procs[len(l.procs)-1].Output()); err != nil {
		return "", err
	}
	return m[1], nil
}

// connectFirstByte starts kin connect with the ticket and returns the time
// from starting it to the first byte read through the forward, then stops it.
func (l *kinLab) connectFirstByte(ticket string) (time.Duration, error) {
	local := fmt.Sprintf("%s:%d", l.client.ip(), l.client.freePort())
	c := l.user("b").Command(l.ctx, "connect", ticket, "--listen", local)
	start := time.Now()
	p, err := kintest.Start(c)
	if err != nil {
		return 0, err
	}
	defer p.Stop(5 * time.Second)
	return firstByte(l.ctx, l.client, local, start)
}

// sentLanesRE finds the most lanes a send used in its log (KIN_VERBOSE).
var sentLanesRE = regexp.MustCompile(`msg="files sent" .*lanes=(\d+)`)

// send runs kin send of file from b to a's agent and returns MB/s and the
// most lanes it used at once.
func (l *kinLab) send(file string, size int64) (float64, int, error) {
	os.RemoveAll(l.inbox) // or the file would already be there
	start := time.Now()
	_, log, err := l.run("b", "--verbose", "send", file, "a", "--quiet")
	if err != nil {
		return 0, 0, err
	}
	el := time.Since(start)
	if err := l.checkLane(log); err != nil {
		return 0, 0, err
	}
	if st, err := os.Stat(filepath.Join(l.inbox, filepath.Base(file))); err != nil || st.Size() != size {
		return 0, 0, fmt.Errorf("the file did not arrive whole: %v", err)
	}
	m := sentLanesRE.FindStringSubmatch(log)
	if m == nil {
		return 0, 0, fmt.Errorf("no lane count in kin's log:\n%s", log)
	}
	lanes, _ := strconv.Atoi(m[1])
	return float64(size) / 1e6 / el.Seconds(), lanes, nil
}

func (l *kinLab) stop() { l.stopFrom(0) }

// stopFrom stops the processes started from index i on: Ctrl-C to all,
// then each gets 5 s to exit before it is killed.
func (l *kinLab) stopFrom(i int) {
	procs := l.procs[i:]
	l.procs = l.procs[:i]
	for _, p := range procs {
		p.Interrupt()
	}
	for _, p := range procs {
		if _, err := p.Wait(5 * time.Second); err != nil {
			p.Kill()
		}
	}
}
