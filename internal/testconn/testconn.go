// Package testconn gives tests real connections on loopback.
package testconn

import (
	"net"
	"testing"
)

// TCPPair returns both ends of a loopback TCP connection, closed when the
// test ends. (net.Pipe is synchronous: two SSH ends that both write their
// version line first deadlock on it.)
func TCPPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
