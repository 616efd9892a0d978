//go:build !windows

package agent

import "syscall"

var errConnRefused error = syscall.ECONNREFUSED
