// Command bench measures how fast bytes move through one kin peer
// connection, side by side in one run with the same bytes over plain TCP and
// over `ssh -L` to a throw-away sshd, all on loopback:
//
//	go run ./bench                 # 256 MiB, 3 runs each, prints a table
//	go run ./bench -size 64 -runs 1
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
	"syscall"
	"time"
)

func main() {
	size := flag.Int("size", 256, "MiB to move per run")
	runs := flag.Int("runs", 3, "runs per row (the median is reported)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()
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
	VsSSH      float64 `json:"vs_ssh,omitempty"`
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

	rows := []*Row{{Name: "raw TCP"}, {Name: "ssh -L (OpenSSH)"}, {Name: "kin connect"}}
	// raw TCP
	for i := 0; i < runs; i++ {
		mbps, fb, err := measure(ctx, srcAddr, size)
		if err != nil {
			return fmt.Errorf("raw TCP: %w", err)
		}
		rows[0].add(mbps, fb)
	}
	// ssh -L
	if addr, stop, err := startSSHForward(ctx, dir, srcAddr); err != nil {
		rows[1].Skipped = err.Error()
	} else {
		for i := 0; i < runs; i++ {
			mbps, fb, err := measure(ctx, addr, size)
			if err != nil {
				stop()
				return fmt.Errorf("ssh -L: %w", err)
			}
			rows[1].add(mbps, fb)
		}
		stop()
	}
	// kin: one peer connection reused for every run; connect time measured separately.
	addr, connectTime, stop, err := startKinForward(ctx, dir, kin, src.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return fmt.Errorf("kin: %w", err)
	}
	for i := 0; i < runs; i++ {
		mbps, fb, err := measure(ctx, addr, size)
		if err != nil {
			stop()
			return fmt.Errorf("kin connect: %w", err)
		}
		rows[2].add(mbps, fb)
	}
	stop()

	tcp, ssh := rows[0].median(), rows[1].median()
	fmt.Printf("%d MiB per run, median of %d runs, loopback, one connection each\n\n", size>>20, runs)
	fmt.Printf("| path | MB/s | vs ssh -L | vs raw TCP | first byte |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		if r.Skipped != "" {
			fmt.Printf("| %s | skipped: %s | | | |\n", r.Name, r.Skipped)
			continue
		}
		r.MBps = r.median()
		r.VsTCP = r.MBps / tcp
		if ssh > 0 {
			r.VsSSH = r.MBps / ssh
		}
		r.FirstByte = medianDur(r.firstBytes).Round(10 * time.Microsecond).String()
		fmt.Printf("| %s | %.0f | %.2fx | %.3fx | %s |\n", r.Name, r.MBps, r.VsSSH, r.VsTCP, r.FirstByte)
	}
	fmt.Printf("\nkin connect: process start to forwarding ready (signaling, ICE, DTLS, SSH): %s\n", connectTime.Round(time.Millisecond))
	if jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"size_mib": size >> 20, "runs": runs, "rows": rows, "kin_connect_ms": connectTime.Milliseconds()}, "", "  ")
		return os.WriteFile(jsonOut, b, 0o644)
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

// startSSHForward starts a throw-away sshd on a loopback port and an
// `ssh -N -L` through it to target.
func startSSHForward(ctx context.Context, dir, target string) (string, func(), error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if sshd, err = exec.LookPath("/usr/sbin/sshd"); err != nil {
			return "", nil, errors.New("sshd not installed")
		}
	}
	d := filepath.Join(dir, "ssh")
	os.MkdirAll(d, 0o700)
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(d, k)).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(d, "user.pub"))
	os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600)
	sshPort := freePort()
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\nAllowTcpForwarding yes\n",
		sshPort, filepath.Join(d, "host"), filepath.Join(d, "authorized_keys"), filepath.Join(d, "pid"))
	os.WriteFile(filepath.Join(d, "sshd_config"), []byte(cfg), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	daemon := exec.CommandContext(ctx, sshd, "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	if err := daemon.Start(); err != nil {
		return "", nil, fmt.Errorf("start sshd: %w", err)
	}
	if err := waitListening(fmt.Sprintf("127.0.0.1:%d", sshPort)); err != nil {
		daemon.Process.Kill()
		daemon.Wait()
		return "", nil, fmt.Errorf("sshd did not start (as root? %w)", err)
	}
	local := fmt.Sprintf("127.0.0.1:%d", freePort())
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	cli := exec.CommandContext(ctx, "ssh", "-N", "-p", fmt.Sprint(sshPort), "-i", filepath.Join(d, "user"),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-L", local+":"+target, user+"@127.0.0.1")
	if err := cli.Start(); err != nil {
		daemon.Process.Kill()
		daemon.Wait()
		return "", nil, err
	}
	stop := func() {
		for _, c := range []*exec.Cmd{cli, daemon} {
			c.Process.Kill()
			c.Wait()
		}
	}
	if err := waitListening(local); err != nil {
		stop()
		return "", nil, fmt.Errorf("ssh -L did not come up: %w", err)
	}
	return local, stop, nil
}

// startKinForward runs kin signal, kin share and kin connect (ICE on
// loopback only) and returns the local forwarded address.
func startKinForward(ctx context.Context, dir, kin string, port int) (addr string, connectTime time.Duration, stop func(), err error) {
	type proc struct {
		cmd    *exec.Cmd
		exited chan struct{}
	}
	var procs []proc
	stop = func() {
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
	start := func(home string, wantRE string, args ...string) ([]string, error) {
		c := exec.CommandContext(ctx, kin, args...)
		c.Env = append(os.Environ(), "KIN_HOME="+filepath.Join(dir, home), "KIN_ICE_INTERFACES=lo")
		r, w := io.Pipe()
		c.Stdout, c.Stderr = w, w
		if err := c.Start(); err != nil {
			return nil, err
		}
		exited := make(chan struct{})
		procs = append(procs, proc{c, exited})
		rx := regexp.MustCompile(wantRE)
		found := make(chan []string, 1)
		go func() {
			sc := bufio.NewScanner(r)
			sent := false
			for sc.Scan() {
				if m := rx.FindStringSubmatch(sc.Text()); m != nil && !sent {
					found <- m
					sent = true
				}
			}
		}()
		go func() { c.Wait(); w.Close(); close(exited) }()
		select {
		case m := <-found:
			return m, nil
		case <-time.After(60 * time.Second):
			return nil, fmt.Errorf("kin %s: no line matching %q", strings.Join(args, " "), wantRE)
		}
	}
	m, err := start("server", `signaling server on (ws://\S+)`, "signal", "--listen", "127.0.0.1:0")
	if err != nil {
		stop()
		return "", 0, nil, err
	}
	url := m[1]
	m, err = start("a", `^kin connect (kin1\S+)`, "--signal", url, "share", fmt.Sprint(port))
	if err != nil {
		stop()
		return "", 0, nil, err
	}
	t0 := time.Now()
	m, err = start("b", `forwarding (\S+) ->`, "connect", m[1], "--listen", "127.0.0.1:0")
	if err != nil {
		stop()
		return "", 0, nil, err
	}
	return m[1], time.Since(t0), stop, nil
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
