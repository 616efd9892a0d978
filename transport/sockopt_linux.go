package transport

import (
	"syscall"
)

// forceBuffers raises the socket buffers past net.core.rmem_max, which
// only works with CAP_NET_ADMIN (e.g. root); failures are fine.
func forceBuffers(fd uintptr, n int) {
	syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, n)
}

func sysHandle(fd uintptr) int { return int(fd) }
