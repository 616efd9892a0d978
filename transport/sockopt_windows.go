package transport

import (
	"fmt"
	"syscall"
)

func forceBuffers(fd uintptr, n int) {}

func sysHandle(fd uintptr) syscall.Handle { return syscall.Handle(fd) }

var sprintf = fmt.Sprintf
