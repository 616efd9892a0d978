// Package netns works with named Linux network namespaces (ip netns), for
// the test labs: run a program inside one, open sockets inside one from
// this process, and delete one with everything still running in it.
package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Command runs name with args inside namespace ns.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Do runs f on an OS thread inside namespace ns: sockets f opens
// (net.Listen, net.Dial) belong to the namespace for good, and may be
// used from any goroutine afterwards. The thread goes back to its own
// namespace after f, or, if it cannot, is thrown away, so nothing else
// ever runs in the namespace by accident.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		leave, err := enter(ns)
		if err != nil {
			errc <- err
			return // still locked: the thread exits with the goroutine
		}
		err = f()
		if leave() == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Delete kills every process left in namespace ns (but this one, which
// may have a thread there) and deletes it. A namespace that is already
// gone is not an error.
func Delete(ns string) error {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			if pid != fmt.Sprint(os.Getpid()) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("delete network namespace %s: %v %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}
