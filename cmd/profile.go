package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
)

// startProfiles writes CPU and block profiles of this process into the
// directory KIN_PROFILE names, for performance work (bench -profile).
// The returned function finishes them.
func startProfiles() func() {
	dir := os.Getenv("KIN_PROFILE")
	if dir == "" {
		return func() {}
	}
	name := func(kind string) string {
		return filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", kind, os.Getpid()))
	}
	cpu, err := os.Create(name("cpu"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kin: KIN_PROFILE:", err)
		return func() {}
	}
	pprof.StartCPUProfile(cpu)
	runtime.SetBlockProfileRate(int(1e6)) // one sample per ms blocked
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		if f, err := os.Create(name("block")); err == nil {
			pprof.Lookup("block").WriteTo(f, 0)
			f.Close()
		}
	}
}
