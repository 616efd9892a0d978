//go:build unix

package files

import (
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// umask returns the process's umask. Linux shows it in /proc/self/status;
// elsewhere it is read by setting it, briefly, to a stricter one.
func umask() fs.FileMode {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return fs.FileMode(m) & fs.ModePerm
				}
			}
		}
	}
	m := syscall.Umask(0o077)
	syscall.Umask(m)
	return fs.FileMode(m) & fs.ModePerm
}
