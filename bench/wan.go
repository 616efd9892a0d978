package main

import (
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
var wanPaths = []string{"raw TCP", "ssh -L (OpenSSH)", "kin connect (QUIC)", "kin connect (data channel)", "scp (OpenSSH)", "kin send (QUIC)", "kin send (data channel)"}

// wanSeconds is how long one run on a WAN link takes at the link's full
// rate; the size moved follows from it. One second: kin moves 0.5 MB/s
// over the lossy link, so each of its runs there takes 25 s already.
const wanSeconds = 1
