//go:build !linux && !windows

package transport

import "fmt"

func forceBuffers(fd uintptr, n int) {}

func sysHandle(fd uintptr) int { return int(fd) }

var sprintf = fmt.Sprintf
