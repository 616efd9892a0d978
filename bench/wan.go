package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"kin/internal/netem"
)

// wanLinks are the emulated WAN links the issue asks for, built in user
// space (internal/netem) since not every kernel has tc netem.
var wanLinks = []netem.Link{
	{Rate: 100e6, RTT: 40 * time.Millisecond, Loss: 0.005},
	{Rate: 1e9, RTT: 10 * time.Millisecond},
}

// wanPaths are the rows measured on each WAN link.
var wanPaths = []string{"raw TCP", "raw TCP, CUBIC", "raw TCP, BBR", "ssh -L (OpenSSH)", "kin connect (QUIC)", "kin connect (data channel)", "scp (OpenSSH)", "kin send (QUIC)", "kin send (data channel)"}

// wanSeconds is how long one run on a WAN link takes at the link's full
// rate; the size moved follows from it. Files are timed from starting the
// command, so connecting is part of every file row (0.65 s of kin's and
// scp's on the 40 ms link): four seconds keep it a small part, where one
// second made it most of the run.
const wanSeconds = 4

// load is what each run on a link moves.
type load struct {
	size            int64         // bytes per run
	dataChannelFile int64         // bytes per kin send over the data channel
	streamLimit     time.Duration // a stream run stops after this long (0: never)
}

// wanLoad is the load on an emulated link, at most size bytes per run.
// The paths a window or pion's SCTP holds far below the link's rate (TCP
// CUBIC and one QUIC flow on the lossy link, the data channel) would take
// minutes to move that: a stream stops after twice wanSeconds and is
// measured by what it moved, and the data channel's kin send moves one
// second of the link.
func wanLoad(link netem.Link, size int64) load {
	second := link.Rate / 8 >> 20 << 20
	return load{
		size:            min(size, wanSeconds*second),
		dataChannelFile: min(size, second),
		streamLimit:     2 * wanSeconds * time.Second,
	}
}

// congestionControl sets TCP's congestion control (net.ipv4.
// tcp_congestion_control, per network namespace) on every emulated host,
// and returns what puts the old one back.
func congestionControl(cc string, hosts []host) (restore func(), err error) {
	var undo []func()
	restore = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	// A namespace may only pick what the host allows (often just its own
	// default and reno): allow cc for as long as the row runs.
	const allowedPath = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
	if b, err := os.ReadFile(allowedPath); err == nil && !slices.Contains(strings.Fields(string(b)), cc) {
		old := strings.TrimSpace(string(b))
		if err := os.WriteFile(allowedPath, []byte(old+" "+cc), 0o644); err != nil {
			return nil, fmt.Errorf("allow %s: %w", cc, err)
		}
		undo = append(undo, func() { os.WriteFile(allowedPath, []byte(old), 0o644) })
	}
	for _, h := range hosts {
		if h.side == nil {
			continue
		}
		ns := h.side.NS
		out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.tcp_congestion_control").Output()
		if err != nil {
			restore()
			return nil, fmt.Errorf("read the congestion control of %s: %w", ns, err)
		}
		old := strings.TrimSpace(string(out))
		if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_congestion_control="+cc).CombinedOutput(); err != nil {
			restore()
			return nil, fmt.Errorf("set %s in %s (modprobe tcp_%s?): %v: %s", cc, ns, cc, err, out)
		}
		undo = append(undo, func() {
			exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_congestion_control="+old).Run()
		})
	}
	return restore, nil
}
