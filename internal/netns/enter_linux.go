package netns

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// enter moves the calling (locked) OS thread into network namespace ns
// and returns how to move it back.
func enter(ns string) (leave func() error, err error) {
	home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		home.Close()
		return nil, fmt.Errorf("netns: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		home.Close()
		return nil, fmt.Errorf("netns: enter %s: %w", ns, err)
	}
	return func() error {
		defer home.Close()
		return unix.Setns(int(home.Fd()), unix.CLONE_NEWNET)
	}, nil
}
