// Command bench measures how fast bytes move through one kin peer
// connection, side by side in one run with the same bytes over plain TCP,
// `ssh -L` and scp to a throw-away sshd, all on loopback: a forwarded TCP
// stream (kin connect) and a file (kin send).
//
//	go run ./bench                 # 256 MiB, 3 runs each, prints a table
//	go run ./bench -size 64 -runs 1
//	go run ./bench -quick          # 64 MiB, one run each
//
// Results are ratios from one run because these machines are noisy.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	size := flag.Int("size", 256, "MiB to move per run")
	runs := flag.Int("runs", 3, "runs per row (the median is reported)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	quick := flag.Bool("quick", false, "64 MiB, one run per row (about a minute)")
	flag.Parse()
	if *quick {
		*size, *runs = 64, 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, int64(*size)<<20, *runs, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Row is one measured path.
type Row struct {
	Name       string  `json:"name"`
	MBps       float64 `json:"mb_per_s"` // median
	FirstByte  string  `json:"first_byte,omitempty"`
	VsSSH      float64 `json:"vs_openssh,omitempty"` // ssh -L for streams, scp for files
	VsTCP      float64 `json:"vs_tcp"`
	Skipped    string  `json:"skipped,omitempty"`
	runsMBps   []float64
	firstBytes []time.Duration
}

func run(ctx context.Context, size int64, runs int, jsonOut string) error {
	dir, err := os.MkdirTemp("", "kin-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kin := filepath.Join(dir, "kin")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", kin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("build kin: %v\n%s", err, out)
	}
	src, err := startSource(size)
	if err != nil {
		return err
	}
	defer src.Close()
	srcAddr := src.Addr().String()
	file := filepath.Join(dir, "payload.bin")
	if err := writePayload(file, size); err != nil {
		return err
	}

	lab := &kinLab{ctx: ctx, dir: dir, kin: kin}
	defer lab.stop()
	if err := lab.start(); err != nil {
		return fmt.Errorf("kin: %w", err)
	}
	sd, sshErr := startSSHD(ctx, dir)
	if sshErr == nil {
		defer sd.stop()
	}

	// Streams: one forwarded TCP connection.
	tcp, sshL, kinC := &Row{Name: "raw TCP"}, &Row{Name: "ssh -L (OpenSSH)"}, &Row{Name: "kin connect"}
	for i := 0; i < runs; i++ {
		if err := tcp.measure(ctx, srcAddr, size); err != nil {
			return fmt.Errorf("raw TCP: %w", err)
		}
	}
	if sshErr != nil {
		sshL.Skipped = sshErr.Error()
	} else if addr, stop, err := sd.forward(ctx, srcAddr); err != nil {
		sshL.Skipped = err.Error()
	} else {
		for i := 0; i < runs; i++ {
			if err := sshL.measure(ctx, addr, size); err != nil {
				stop()
				return fmt.Errorf("ssh -L: %w", err)
			}
		}
		stop()
	}
	before := len(lab.procs)
	addr, connectTime, err := lab.connect(src.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return fmt.Errorf("kin connect: %w", err)
	}
	for i := 0; i < runs; i++ {
		if err := kinC.measure(ctx, addr, size); err != nil {
			return fmt.Errorf("kin connect: %w", err)
		}
	}

	lab.stopFrom(before) // kin share would take the agent's offers

	dc, err := dataChannel(ctx, size, runs)
	if err != nil {
		return fmt.Errorf("pion data channel: %w", err)
	}

	// Files: the same file with scp and with kin send.
	scp, send := &Row{Name: "scp (OpenSSH)"}, &Row{Name: "kin send"}
	for i := 0; i < runs; i++ {
		if sshErr != nil {
			scp.Skipped = sshErr.Error()
			break
		}
		dst := filepath.Join(dir, "scp-copy.bin")
		mbps, err := sd.scp(ctx, file, dst)
		os.Remove(dst)
		if err != nil {
			return err
		}
		scp.add(mbps, 0)
	}
	for i := 0; i < runs; i++ {
		mbps, err := lab.send(file, size)
		if err != nil {
			return fmt.Errorf("kin send: %w", err)
		}
		send.add(mbps, 0)
	}

	fmt.Printf("%d MiB per run, median of %d runs, loopback only\n\n", size>>20, runs)
	fmt.Printf("| path | MB/s | vs OpenSSH | vs raw TCP | first byte |\n|---|---:|---:|---:|---:|\n")
	rows := []*Row{tcp, sshL, dc, kinC, scp, send}
	for _, r := range rows {
		base := sshL
		if r == scp || r == send {
			base = scp
		}
		r.finish(base.median(), tcp.median())
		if r.Skipped != "" {
			fmt.Printf("| %s | skipped: %s | | | |\n", r.Name, r.Skipped)
			continue
		}
		fb := r.FirstByte
		if fb == "0s" {
			fb = ""
		}
		fmt.Printf("| %s | %.0f | %.2fx | %.3fx | %s |\n", r.Name, r.MBps, r.VsSSH, r.VsTCP, fb)
	}
	fmt.Printf("\nstreams compare with ssh -L, files with scp; kin connect from process start to forwarding ready: %s\n", connectTime.Round(time.Millisecond))
	if jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"size_mib": size >> 20, "runs": runs, "rows": rows, "kin_connect_ms": connectTime.Milliseconds()}, "", "  ")
		return os.WriteFile(jsonOut, b, 0o644)
	}
	return nil
}

func (r *Row) measure(ctx context.Context, addr string, size int64) error {
	mbps, fb, err := measure(ctx, addr, size)
	if err == nil {
		r.add(mbps, fb)
	}
	return err
}

func (r *Row) finish(base, tcp float64) {
	r.MBps = r.median()
	if tcp > 0 {
		r.VsTCP = r.MBps / tcp
	}
	if base > 0 {
		r.VsSSH = r.MBps / base
	}
	r.FirstByte = medianDur(r.firstBytes).Round(10 * time.Microsecond).String()
}

func writePayload(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(rand.Uint32())
		}
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			return err
		}
	}
	return nil
}

func (r *Row) add(mbps float64, fb time.Duration) {
	r.runsMBps = append(r.runsMBps, mbps)
	r.firstBytes = append(r.firstBytes, fb)
}

func (r *Row) median() float64 {
	if len(r.runsMBps) == 0 {
		return 0
	}
	s := slices.Clone(r.runsMBps)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// startSource serves size pseudo-random bytes to every TCP connection.
func startSource(size int64) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; {
					n := min(left, int64(len(buf)))
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()
	return ln, nil
}

// measure reads from addr until EOF and returns MB/s and time to first byte.
func measure(ctx context.Context, addr string, want int64) (float64, time.Duration, error) {
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 256<<10)
	var n int64
	var first time.Duration
	for {
		k, err := c.Read(buf)
		if k > 0 && n == 0 {
			first = time.Since(start)
		}
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	el := time.Since(start)
	if n != want {
		return 0, 0, fmt.Errorf("got %d bytes, want %d", n, want)
	}
	return float64(n) / 1e6 / el.Seconds(), first, nil
}

// sshd is a throw-away OpenSSH server on a loopback port.
type sshd struct {
	port int
	key  string // client private key it accepts
	user string
	stop func()
}

func startSSHD(ctx context.Context, dir string) (*sshd, error) {
	bin, err := exec.LookPath("sshd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/sshd"); err != nil {
			return nil, errors.New("sshd not installed")
		}
	}
	d := filepath.Join(dir, "ssh")
	os.MkdirAll(d, 0o700)
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(d, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(d, "user.pub"))
	os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600)
	port := freePort()
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\n",
		port, filepath.Join(d, "host"), filepath.Join(d, "authorized_keys"), filepath.Join(d, "pid"))
	os.WriteFile(filepath.Join(d, "sshd_config"), []byte(cfg), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	daemon := exec.CommandContext(ctx, bin, "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	if err := daemon.Start(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	stop := func() { daemon.Process.Kill(); daemon.Wait() }
	if err := waitListening(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		stop()
		return nil, fmt.Errorf("sshd did not start (as root? %w)", err)
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	return &sshd{port: port, key: filepath.Join(d, "user"), user: user, stop: stop}, nil
}

func (s *sshd) opts() []string {
	return []string{"-i", s.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
}

// forward starts `ssh -N -L` through the sshd to target.
func (s *sshd) forward(ctx context.Context, target string) (string, func(), error) {
	local := fmt.Sprintf("127.0.0.1:%d", freePort())
	args := append(append([]string{"-N", "-p", fmt.Sprint(s.port)}, s.opts()...), "-L", local+":"+target, s.user+"@127.0.0.1")
	cli := exec.CommandContext(ctx, "ssh", args...)
	if err := cli.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cli.Process.Kill(); cli.Wait() }
	if err := waitListening(local); err != nil {
		stop()
		return "", nil, fmt.Errorf("ssh -L did not come up: %w", err)
	}
	return local, stop, nil
}

// scp copies file into dst through the sshd and returns MB/s.
func (s *sshd) scp(ctx context.Context, file, dst string) (float64, error) {
	st, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	args := append(append([]string{"-q", "-P", fmt.Sprint(s.port)}, s.opts()...), file, s.user+"@127.0.0.1:"+dst)
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "scp", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("scp: %v %s", err, out)
	}
	return float64(st.Size()) / 1e6 / time.Since(start).Seconds(), nil
}

// kinLab runs kin processes side by side on loopback (ICE on lo only):
// a signaling server, alice sharing and running an agent, bob connecting
// and sending.
type kinLab struct {
	ctx   context.Context
	dir   string
	kin   string
	url   string
	inbox string
	procs []*kinProc
}

type kinProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (l *kinLab) env(home string) []string {
	return append(os.Environ(), "KIN_HOME="+filepath.Join(l.dir, home), "KIN_ICE_INTERFACES=lo", "KIN_SIGNAL="+l.url)
}

func (l *kinLab) run(home string, args ...string) (string, error) {
	c := exec.CommandContext(l.ctx, l.kin, args...)
	c.Env = l.env(home)
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kin %s: %v %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// spawn starts kin in the background and returns the first line matching wantRE.
func (l *kinLab) spawn(home, wantRE string, args ...string) ([]string, error) {
	c := exec.CommandContext(l.ctx, l.kin, args...)
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
	var mu sync.Mutex
	var lines []string
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
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
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("kin %s exited: %s", strings.Join(args, " "), strings.Join(lines, "\n"))
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("kin %s: no line matching %q", strings.Join(args, " "), wantRE)
	}
}

func (l *kinLab) start() error {
	m, err := l.spawn("server", `signaling server on (ws://\S+)`, "signal", "--listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.url = m[1]
	aKey, err := l.run("a", "id")
	if err != nil {
		return err
	}
	bKey, err := l.run("b", "id")
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

// connect shares port from a and connects b with the ticket.
func (l *kinLab) connect(port int) (string, time.Duration, error) {
	m, err := l.spawn("a", `^kin connect (kin1\S+)`, "share", fmt.Sprint(port))
	if err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	m, err = l.spawn("b", `forwarding (\S+) ->`, "connect", m[1], "--listen", "127.0.0.1:0")
	if err != nil {
		return "", 0, err
	}
	return m[1], time.Since(t0), nil
}

// send runs kin send of file from b to a's agent and returns MB/s.
func (l *kinLab) send(file string, size int64) (float64, error) {
	os.RemoveAll(l.inbox) // or the file would already be there
	start := time.Now()
	if _, err := l.run("b", "send", file, "a", "--quiet"); err != nil {
		return 0, err
	}
	el := time.Since(start)
	if st, err := os.Stat(filepath.Join(l.inbox, filepath.Base(file))); err != nil || st.Size() != size {
		return 0, fmt.Errorf("the file did not arrive whole: %v", err)
	}
	return float64(size) / 1e6 / el.Seconds(), nil
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

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(addr string) error {
	var err error
	for i := 0; i < 100; i++ {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
