//go:build !linux && !windows

package transport

func forceBuffers(fd uintptr, n int) {}

func sysHandle(fd uintptr) int { return int(fd) }
