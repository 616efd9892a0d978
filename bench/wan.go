package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// wanLinks are the emulated WAN links the issue asks for.
var wanLinks = []string{"100 Mbit/s, 40 ms RTT, 0.5% loss", "1 Gbit/s, 10 ms RTT"}

// wanSkipped says why the WAN rows cannot run here. They need root, to
// build network namespaces, and tc netem, to delay and drop packets.
func wanSkipped() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	ns := fmt.Sprintf("kinbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return "cannot create a network namespace: " + strings.TrimSpace(string(out))
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if err := exec.Command("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "20ms").Run(); err != nil {
		return "this kernel has no tc netem (sch_netem)"
	}
	return "netem works here, but the WAN rows are not built yet (the harness was written on a kernel without netem)"
}
