// Command load measures the signaling server under load: it starts real
// `kin signal` processes on loopback (one, or two joined by a throw-away
// redis-server), registers N simulated peers over real WebSockets, and has
// them exchange offer/answer/candidate messages in pairs at a fixed rate.
// It reports peak registered peers, server RSS, the routing rate and the
// latency of an offer from sender to receiver.
//
//	go run ./bench/load                         # 10,000 peers, 1,000 offers/s for 10 s, 1 and 2 instances
//	go run ./bench/load -peers 2000 -seconds 5
//
// Bounded: every phase has a deadline; only 127.0.0.1 is used.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"kin/keys"
	"kin/signal"
)

func main() {
	peers := flag.Int("peers", 10000, "simulated peers to register")
	rate := flag.Int("rate", 1000, "offers per second (each answered with an answer and a candidate)")
	seconds := flag.Int("seconds", 10, "how long to send offers")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	raiseFileLimit()
	var rows []Row
	for _, instances := range []int{1, 2} {
		r, err := measure(ctx, *peers, instances, *rate, time.Duration(*seconds)*time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "load: %d instance(s): %v\n", instances, err)
			os.Exit(1)
		}
		rows = append(rows, r)
	}
	fmt.Printf("\n| setup | peers registered | server RSS | offers/s sent | messages/s routed | offer p50 | offer p99 |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %d | %.0f MB | %.0f | %.0f | %s | %s |\n", r.Setup, r.Peers, r.RSSMB, r.OffersPerS, r.RoutedPerS, r.P50, r.P99)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
	}
}

// Row is one measured setup.
type Row struct {
	Setup      string  `json:"setup"`
	Peers      int     `json:"peers_registered"`
	RSSMB      float64 `json:"server_rss_mb"` // all instances together, at full registration
	OffersPerS float64 `json:"offers_per_s"`
	RoutedPerS float64 `json:"messages_routed_per_s"`
	P50        string  `json:"offer_p50"`
	P99        string  `json:"offer_p99"`
	Lost       int64   `json:"offers_lost"`
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// settle is how long the servers idle after registration before their RSS
// is read: Go returns freed memory to the OS gradually.
const settle = 10 * time.Second

func measure(ctx context.Context, n, instances, rate int, dur time.Duration) (Row, error) {
	row := Row{Setup: fmt.Sprintf("%d instance", instances)}
	dir, err := os.MkdirTemp("", "kin-load")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(dir)
	kin := filepath.Join(dir, "kin")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", kin, ".").CombinedOutput(); err != nil {
		return row, fmt.Errorf("build kin: %v\n%s", err, out)
	}
	args := []string{"signal", "--listen", "127.0.0.1:0", "--max-conns", strconv.Itoa(n + 100), "--register-rate", "1000000"}
	if instances > 1 {
		row.Setup = fmt.Sprintf("%d instances + Redis", instances)
		url, stop, err := startRedis(ctx, dir)
		if err != nil {
			return row, err
		}
		defer stop()
		args = append(args, "--redis", url)
	}
	var urls []string
	var pids []int
	for range instances {
		cmd := exec.CommandContext(ctx, kin, args...)
		cmd.Env = append(os.Environ(), "KIN_HOME="+dir)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return row, err
		}
		defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
		url, err := waitURL(stderr)
		if err != nil {
			return row, err
		}
		go io.Copy(io.Discard, stderr)
		urls = append(urls, url)
		pids = append(pids, cmd.Process.Pid)
	}

	// Register: peer i on instance i%instances; pairs (2k, 2k+1) straddle
	// instances when there are two.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clients := make([]*signal.Client, n)
	ids := make([]keys.PeerID, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(200)
	var registered atomic.Int64
	start := time.Now()
	for i := range n {
		g.Go(func() error {
			id, err := keys.NewIdentity()
			if err != nil {
				return err
			}
			c := signal.NewClient(signal.ClientConfig{URL: urls[i%instances], Signer: id.Signer, Logger: quiet})
			wg.Add(1)
			go func() { defer wg.Done(); c.Run(cctx) }()
			rctx, rcancel := context.WithTimeout(gctx, time.Minute)
			defer rcancel()
			reg, err := c.Ready(rctx)
			if err != nil {
				return fmt.Errorf("peer %d: %w", i, err)
			}
			clients[i], ids[i] = c, reg.ID
			registered.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return row, fmt.Errorf("after %d registrations: %w", registered.Load(), err)
	}
	row.Peers = int(registered.Load())
	fmt.Fprintf(os.Stderr, "%s: %d peers registered in %s\n", row.Setup, row.Peers, time.Since(start).Round(time.Millisecond))
	time.Sleep(settle) // let the servers settle before reading RSS
	for _, pid := range pids {
		row.RSSMB += rssMB(pid)
	}

	// Exchange: offers at a fixed rate round-robin over the pairs; every
	// receiver answers with an answer and a candidate.
	var latMu sync.Mutex
	var lats []time.Duration
	var routed, sent atomic.Int64
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := c.Recv(cctx)
				if err != nil {
					return
				}
				routed.Add(1)
				if m.Type != signal.TypeOffer {
					continue
				}
				if ns, err := strconv.ParseInt(m.SDP, 10, 64); err == nil {
					d := time.Since(time.Unix(0, ns))
					latMu.Lock()
					lats = append(lats, d)
					latMu.Unlock()
				}
				c.Send(cctx, signal.Message{Type: signal.TypeAnswer, To: m.From, Session: m.Session, SDP: "answer"})
				c.Send(cctx, signal.Message{Type: signal.TypeCandidate, To: m.From, Session: m.Session, Candidate: "{}"})
			}
		}()
	}
	// Offers go out in small batches every 10 ms, so the rate holds even
	// when one tick comes late.
	const step = 10 * time.Millisecond
	tick := time.NewTicker(step)
	defer tick.Stop()
	begin := time.Now()
	end := begin.Add(dur)
	pair := 0
	for now := begin; now.Before(end); {
		select {
		case <-ctx.Done():
			return row, ctx.Err()
		case now = <-tick.C:
		}
		due := int(float64(rate) * now.Sub(begin).Seconds())
		for ; pair < due; pair++ {
			from, to := 2*pair%n, (2*pair+1)%n
			m := signal.Message{Type: signal.TypeOffer, To: ids[to], Session: fmt.Sprint(pair), SDP: strconv.FormatInt(time.Now().UnixNano(), 10)}
			go func() {
				if clients[from].Send(cctx, m) == nil {
					sent.Add(1)
				}
			}()
		}
	}
	elapsed := time.Since(begin)
	time.Sleep(2 * time.Second) // stragglers
	row.OffersPerS = float64(sent.Load()) / elapsed.Seconds()
	row.RoutedPerS = float64(routed.Load()) / elapsed.Seconds()
	latMu.Lock()
	slices.Sort(lats)
	if len(lats) > 0 {
		row.P50 = lats[len(lats)/2].Round(10 * time.Microsecond).String()
		row.P99 = lats[len(lats)*99/100].Round(10 * time.Microsecond).String()
	}
	row.Lost = sent.Load() - int64(len(lats))
	latMu.Unlock()
	return row, nil
}

var urlRE = regexp.MustCompile(`signaling server on (ws://\S+) `)

func waitURL(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
			return m[1], nil
		}
	}
	return "", errors.New("kin signal did not start")
}

func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

func startRedis(ctx context.Context, dir string) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", dir, "--maxclients", "1000")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start redis-server (Debian package redis-server): %w", err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "redis://" + addr + "/0", func() { cmd.Process.Kill(); cmd.Wait() }, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return "", nil, errors.New("redis-server did not start")
}
