// Command bench measures how fast bytes move through one kin peer
// connection, side by side in one run with the same bytes over raw TCP,
// kin's transport alone, `ssh -L` and scp to a throw-away sshd: a
// forwarded TCP stream (kin connect) and a file (kin send), each over both
// of kin's lanes: QUIC on the ICE 5-tuple (what kin uses when it can) and
// the data channel (forced with KIN_LANE=datachannel, what relayed paths
// and older peers get). It measures on loopback,
// then across two emulated WAN links (internal/netem, as root): 100 Mbit/s
// with a 40 ms round trip and 0.5% loss, and 1 Gbit/s with 10 ms.
// It prints a Markdown table and writes it as JSON and as a PNG chart.
//
//	go run ./bench                 # 1 GiB, 3 runs per row (about 6 minutes)
//	go run ./bench -quick          # 64 MiB, one run per row (under 2 minutes)
//	go run ./bench -profile DIR    # also CPU and block profiles of every kin process
//
// Ratios and medians, because these machines are noisy.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"kin/internal/kintest"
	"kin/internal/netem"
)

func main() {
	var o options
	flag.IntVar(&o.sizeMiB, "size", 1024, "MiB to move per run")
	flag.IntVar(&o.runs, "runs", 3, "runs per row (the median is reported)")
	flag.StringVar(&o.out, "out", "bench/out", "directory for results.json and results.png")
	flag.StringVar(&o.profile, "profile", "", "write CPU and block profiles of every kin process into this directory")
	quick := flag.Bool("quick", false, "64 MiB, one run per row")
	flag.StringVar(&o.link, "link", "", `measure only the links whose name contains this (e.g. "loopback", "loss", "1 Gbit")`)
	flag.Parse()
	if *quick {
		o.sizeMiB, o.runs = 64, 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	sizeMiB, runs int
	out, profile  string
	link          string // "": every link
}

// Row is one measured path on one link.
type Row struct {
	Name      string  `json:"name"`
	Link      string  `json:"link"`
	MBps      float64 `json:"mb_per_s,omitempty"`     // median
	VsSSH     float64 `json:"vs_openssh,omitempty"`   // vs ssh -L for streams, scp for files
	VsTCP     float64 `json:"vs_raw_tcp,omitempty"`   // vs raw TCP
	CPUPerGB  float64 `json:"cpu_s_per_gb,omitempty"` // both ends and the kernel, median
	OfLink    float64 `json:"of_link_rate,omitempty"` // emulated WAN: share of the link's rate
	FirstByte string  `json:"connect_to_first_byte,omitempty"`
	UDPDrops  int64   `json:"udp_receive_buffer_drops"` // RcvbufErrors growth, all runs
	Skipped   string  `json:"skipped,omitempty"`
	Lanes     string  `json:"lanes,omitempty"` // kin send: lanes used, per run

	runs       []float64
	lanes      []int
	cpu        []float64
	firstBytes []time.Duration
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "kin-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{dir: dir, runs: o.runs}
	if b.kin, err = kintest.Build(ctx, dir); err != nil {
		return err
	}
	if o.profile != "" {
		if b.profile, err = filepath.Abs(o.profile); err == nil {
			err = os.MkdirAll(b.profile, 0o755)
		}
		if err != nil {
			return err
		}
	}
	size := int64(o.sizeMiB) << 20
	var rows []*Row
	if strings.Contains("loopback", o.link) {
		if rows, err = b.link(ctx, "loopback", host{}, host{}, load{size: size, dataChannelFile: size}, false); err != nil {
			return err
		}
	}
	for _, link := range wanLinks {
		name := link.String()
		if !strings.Contains(name, o.link) {
			continue
		}
		if why := netem.Available(); why != "" {
			for _, path := range wanPaths {
				rows = append(rows, &Row{Name: path, Link: name, Skipped: why})
			}
			continue
		}
		pair, err := netem.Start(ctx, link)
		if err != nil {
			return err
		}
		wan, err := b.link(ctx, name, host{pair.B}, host{pair.A}, wanLoad(link, size), link.Loss > 0)
		if cerr := pair.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, r := range wan {
			r.OfLink = r.MBps * 8e6 / float64(link.Rate)
		}
		rows = append(rows, wan...)
	}

	title := fmt.Sprintf("kin bench: median of %d runs; %d MiB per run on loopback; on a WAN, %d s of the link's rate (streams stop after %d s, kin send over the data channel moves 1 s)", o.runs, o.sizeMiB, wanSeconds, 2*wanSeconds)
	printTable(os.Stdout, title, rows)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"size_mib": o.sizeMiB, "runs": o.runs, "rows": rows}, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(o.out, "results.png"), title, rows); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s and %s\n", filepath.Join(o.out, "results.json"), filepath.Join(o.out, "results.png"))
	return nil
}

// bench is what every measured link shares: the kin binary, a scratch
// directory, and how often to run each row.
type bench struct {
	dir, kin, profile string
	runs              int
}

// link measures every path between client and server, moving what ld says.
// Files go from client to server; streams come from a source on the
// server to the client.
// lossy says whether the link drops packets: there a forced lane count is
// measured beside the adaptive one.
func (b *bench) link(ctx context.Context, name string, server, client host, ld load, lossy bool) ([]*Row, error) {
	size := ld.size
	dir, err := os.MkdirTemp(b.dir, "link")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src, err := startSource(server, size)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	srcPort := src.Addr().(*net.TCPAddr).Port
	srcAddr := fmt.Sprintf("%s:%d", server.ip(), srcPort) // as the client reaches it
	local := fmt.Sprintf("127.0.0.1:%d", srcPort)         // as the server reaches it
	file := filepath.Join(dir, "payload.bin")
	if err := writePayload(file, size); err != nil {
		return nil, err
	}
	dcFile := file // what kin send moves over the data channel
	if ld.dataChannelFile < size {
		dcFile = filepath.Join(dir, "payload-dc.bin")
		if err := writePayload(dcFile, ld.dataChannelFile); err != nil {
			return nil, err
		}
	}
	lab := &kinLab{ctx: ctx, dir: dir, kin: b.kin, profile: b.profile, server: server, client: client}
	defer lab.stop()
	if err := lab.start(); err != nil {
		return nil, fmt.Errorf("kin: %w", err)
	}
	sd, sshErr := startSSHD(ctx, dir, server, client)
	if sshErr == nil {
		defer sd.stop()
	}
	hosts := []host{client}
	if server != client {
		hosts = append(hosts, server)
	}
	loopback := server.side == nil
	tcp := &Row{Name: "raw TCP", Link: name}
	sshL := &Row{Name: "ssh -L (OpenSSH)", Link: name}
	trQ := &Row{Name: "kin transport, QUIC (no SSH)", Link: name}
	trDC := &Row{Name: "kin transport, data channel (no SSH)", Link: name}
	kinC := &Row{Name: "kin connect (QUIC)", Link: name}
	kinCDC := &Row{Name: "kin connect (data channel)", Link: name}
	scp := &Row{Name: "scp (OpenSSH)", Link: name}
	send := &Row{Name: "kin send (QUIC)", Link: name}
	sendDC := &Row{Name: "kin send (data channel)", Link: name}
	sendForced := &Row{Name: fmt.Sprintf("kin send (QUIC, KIN_LANES=%d)", forcedBenchLanes), Link: name}
	// each measures f b.runs times into r; f returns MB/s and the bytes
	// it moved.
	each := func(r *Row, f func() (float64, int64, error)) error {
		for range b.runs {
			var mbps float64
			cpu, drops, err := metered(hosts, func() (moved int64, err error) {
				mbps, moved, err = f()
				return moved, err
			})
			if err != nil {
				return fmt.Errorf("%s: %w", r.Name, err)
			}
			r.add(mbps, cpu, drops)
		}
		return nil
	}
	stream := func(r *Row, addr string) error {
		return each(r, func() (float64, int64, error) { return measure(ctx, client, addr, size, ld.streamLimit) })
	}

	// Streams: one forwarded TCP connection.
	if err := stream(tcp, srcAddr); err != nil {
		return nil, err
	}
	// On an emulated link, raw TCP again with each congestion control
	// set in both namespaces: CUBIC is what a default Linux host gets,
	// BBR the best a single TCP flow gets on a lossy path.
	var ccRows []*Row
	if !loopback {
		for _, cc := range []string{"cubic", "bbr"} {
			r := &Row{Name: "raw TCP, " + strings.ToUpper(cc), Link: name}
			restore, err := congestionControl(cc, hosts)
			if err == nil {
				err = stream(r, srcAddr)
				restore()
			}
			if err != nil {
				r.Skipped = err.Error()
			}
			ccRows = append(ccRows, r)
		}
	}
	if sshErr != nil {
		sshL.Skipped = sshErr.Error()
	} else {
		addr, stop, err := sd.forward(ctx, local)
		if err != nil {
			return nil, err
		}
		err = stream(sshL, addr)
		stop()
		if err != nil {
			return nil, err
		}
		for range connectRuns(b.runs) {
			d, err := sd.forwardFirstByte(ctx, local)
			if err != nil {
				return nil, fmt.Errorf("ssh -L first byte: %w", err)
			}
			sshL.firstBytes = append(sshL.firstBytes, d)
		}
	}
	before := len(lab.procs)
	ticket, err := lab.share(srcPort)
	if err != nil {
		return nil, fmt.Errorf("kin share: %w", err)
	}
	for _, r := range []*Row{kinC, kinCDC} {
		lab.lane = laneOf(r)
		connBefore := len(lab.procs)
		addr, err := lab.connect(ticket)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Name, err)
		}
		if err := stream(r, addr); err != nil {
			return nil, err
		}
		lab.stopFrom(connBefore)
		for range connectRuns(b.runs) {
			d, err := lab.connectFirstByte(ticket)
			if err != nil {
				return nil, fmt.Errorf("%s first byte: %w", r.Name, err)
			}
			r.firstBytes = append(r.firstBytes, d)
		}
	}
	lab.lane = ""
	lab.stopFrom(before) // kin share would take the agent's offers

	rows := append([]*Row{tcp}, ccRows...)
	rows = append(rows, sshL, kinC, kinCDC, scp, send, sendDC)
	if loopback {
		// The ceiling: kin's transport alone, in this process, with kin's GC setting.
		old := debug.SetGCPercent(400)
		for _, r := range []*Row{trQ, trDC} {
			if err := each(r, func() (float64, int64, error) {
				mbps, err := transportAlone(ctx, size, laneOf(r))
				return mbps, size, err
			}); err != nil {
				debug.SetGCPercent(old)
				return nil, err
			}
		}
		debug.SetGCPercent(old)
		rows = []*Row{tcp, sshL, trQ, trDC, kinC, kinCDC, scp, send, sendDC}
	}

	// Files: the same file with scp and with kin send.
	if sshErr != nil {
		scp.Skipped = sshErr.Error()
	} else {
		dst := filepath.Join(dir, "scp-copy.bin")
		err := each(scp, func() (float64, int64, error) {
			defer os.Remove(dst)
			mbps, err := sd.scp(ctx, file, dst)
			return mbps, size, err
		})
		if err != nil {
			return nil, err
		}
	}
	sends := []*Row{send, sendDC}
	if lossy {
		sends = append(sends, sendForced)
		rows = append(rows, sendForced)
	}
	for _, r := range sends {
		lab.lane, lab.lanes = laneOf(r), lanesOf(r)
		f, n := file, size
		if r == sendDC {
			f, n = dcFile, ld.dataChannelFile
		}
		if err := each(r, func() (float64, int64, error) {
			mbps, lanes, err := lab.send(f, n)
			r.lanes = append(r.lanes, lanes)
			return mbps, n, err
		}); err != nil {
			return nil, err
		}
	}
	lab.lane, lab.lanes = "", ""
	for _, r := range rows {
		base := sshL
		if r == scp || r == send || r == sendDC || r == sendForced {
			base = scp
		}
		r.finish(base.median(), tcp.median())
	}
	return rows, nil
}

// forcedBenchLanes is the lane count of the forced kin send row on a lossy
// link (the measured striping: 16 QUIC connections moved 8.8 MB/s there).
const forcedBenchLanes = 16

// lanesOf is the KIN_LANES a row is measured with ("": adaptive).
func lanesOf(r *Row) string {
	if strings.Contains(r.Name, "KIN_LANES=") {
		return strconv.Itoa(forcedBenchLanes)
	}
	return ""
}

// laneOf is the KIN_LANE a row is measured with.
func laneOf(r *Row) string {
	if strings.Contains(r.Name, "data channel") {
		return "datachannel"
	}
	return ""
}

// connectRuns is how many times connect-to-first-byte is measured.
func connectRuns(runs int) int { return max(3, 2*runs-1) }

// metered runs f and returns the machine's CPU seconds per GB moved and
// how many UDP datagrams the hosts' kernels dropped meanwhile for lack of
// buffer.
// f returns how many bytes it moved.
func metered(hosts []host, f func() (int64, error)) (cpuPerGB float64, drops int64, err error) {
	c0, ok := machineCPU()
	for _, h := range hosts {
		drops -= h.udpDrops()
	}
	moved, err := f()
	c1, ok1 := machineCPU()
	for _, h := range hosts {
		drops += h.udpDrops()
	}
	if err != nil || !ok || !ok1 || moved == 0 {
		return 0, 0, err
	}
	return (c1 - c0).Seconds() / (float64(moved) / 1e9), drops, nil
}

func printTable(w io.Writer, title string, rows []*Row) {
	fmt.Fprintf(w, "%s\n\n", title)
	fmt.Fprintf(w, "| link | path | MB/s | vs OpenSSH | vs raw TCP | of link rate | CPU s/GB | UDP drops | connect to first byte | lanes |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %s | skipped: %s | | | | | | | |\n", r.Link, r.Name, r.Skipped)
			continue
		}
		ratio := func(v float64, f string) string {
			if v == 0 {
				return ""
			}
			return fmt.Sprintf(f, v)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %s | %s | %s | %s | %d | %s | %s |\n", r.Link, r.Name, r.MBps,
			ratio(r.VsSSH, "%.2fx"), ratio(r.VsTCP, "%.3fx"), ratio(r.OfLink*100, "%.0f%%"), ratio(r.CPUPerGB, "%.1f"), r.UDPDrops, r.FirstByte, r.Lanes)
	}
}

func (r *Row) add(mbps, cpuPerGB float64, drops int64) {
	r.runs = append(r.runs, mbps)
	r.UDPDrops += drops
	r.cpu = append(r.cpu, cpuPerGB)
}

func (r *Row) finish(base, tcp float64) {
	r.MBps = r.median()
	if len(r.lanes) > 0 {
		var all []string
		for _, n := range r.lanes {
			all = append(all, strconv.Itoa(n))
		}
		r.Lanes = strings.Join(all, ", ")
	}
	r.CPUPerGB = median(r.cpu)
	if tcp > 0 {
		r.VsTCP = r.MBps / tcp
	}
	if base > 0 {
		r.VsSSH = r.MBps / base
	}
	if len(r.firstBytes) > 0 {
		r.FirstByte = median(r.firstBytes).Round(100 * time.Microsecond).String()
		var all []string
		for _, d := range r.firstBytes {
			all = append(all, d.Round(time.Millisecond).String())
		}
		r.FirstByte += " (" + strings.Join(all, ", ") + ")"
	}
}

func (r *Row) median() float64 { return median(r.runs) }

func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func writePayload(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(f, rng, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
