package agent

import "syscall"

// WSAECONNREFUSED
var errConnRefused error = syscall.Errno(10061)
