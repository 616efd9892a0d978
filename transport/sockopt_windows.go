package transport

import (
	"syscall"
)

func forceBuffers(fd uintptr, n int) {}

func sysHandle(fd uintptr) syscall.Handle { return syscall.Handle(fd) }
