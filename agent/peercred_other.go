//go:build !linux && !darwin

package agent

import (
	"errors"
	"net"
)

var errNoPeerCred = errors.New("peer credentials are not available on this system")

// peerUID is not available here: the socket's directory (0700) alone keeps
// other users out.
func peerUID(*net.UnixConn) (int, error) { return 0, errNoPeerCred }
