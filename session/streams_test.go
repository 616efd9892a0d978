package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// bound waits until the client's connection has compared bindings.
func bound(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.lanes.bound:
	case <-time.After(10 * time.Second):
		t.Fatal("the bindings were never compared")
	}
}

// sumServer answers each connection, once the client has half-closed it,
// with the SHA-256 of everything it read.
func sumServer(t *testing.T) (int, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				io.Copy(h, c)
				c.Write(h.Sum(nil))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, ln.Addr().String()
}

// sumEnv is a server that lets bob reach a sumServer's port.
func sumEnv(t *testing.T) (*env, *keys.Identity, int) {
	port, addr := sumServer(t)
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: addr},
	})
	return e, bob, port
}

// sumOfSent writes data on conn, half-closes it and returns the answer.
func sumOfSent(t *testing.T, conn net.Conn, data []byte) []byte {
	t.Helper()
	defer conn.Close()
	go func() {
		conn.Write(data)
		conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return got
}

// On a connection whose QUIC runs end to end, a forwarded connection's
// bytes go on a stream beside SSH's (not inside it): both ways, with
// half-close, and each forward on its own stream.
func TestForwardsGoOnStreams(t *testing.T) {
	e, bob, port := sumEnv(t)
	for _, end := range []bool{true, false} {
		c, conn := e.dialLanesBound(bob, nil, end)
		bound(t, c)
		for range 3 {
			data := make([]byte, 3<<20)
			rand.Read(data)
			remote, err := c.DialPort(e.ctx, port)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := sumOfSent(t, remote, data), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
				t.Fatalf("end to end %v: the service got other bytes than were sent", end)
			}
		}
		want := 0
		if end {
			want = 3
		}
		if n := conn.streamsOpened(); n != want {
			t.Errorf("end to end %v: %d streams opened, want %d", end, n, want)
		}
	}
}

// A stream carries only the port the channel asked for, and only what the
// grant allows: a port not granted is refused before any stream.
func TestStreamForwardsKeepTheGrant(t *testing.T) {
	p1, a1 := sumServer(t)
	p2, a2 := sumServer(t)
	bob := ident(t)
	e := newEnv(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{p1}}}),
		Ports:   map[int]string{p1: a1, p2: a2},
	})
	c, conn := e.dialLanesBound(bob, nil, true)
	bound(t, c)
	if _, err := c.DialPort(e.ctx, p2); !errors.Is(err, ErrPortNotAllowed) {
		t.Fatalf("port not granted: %v, want ErrPortNotAllowed", err)
	}
	if n := conn.streamsOpened(); n != 0 {
		t.Errorf("%d streams opened for a refused port", n)
	}
}

// A stream that does not present the name of a forward waiting for it is
// closed and counted; a name works once.
func TestStreamWithoutItsForwardIsRefused(t *testing.T) {
	a, b := laneTCPPair(t)
	defer a.Close()
	defer b.Close()
	opener, taker := newLaneHub(a, discardLog()), newLaneHub(b, discardLog())
	defer taker.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := newStreamID()
	wait := taker.expectStream(id)
	got := make(chan net.Conn, 1)
	go func() { got <- wait.take(ctx) }()
	wrong, err := opener.openStream(ctx, newStreamID())
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if n, err := wrong.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the refused stream reads %d, %v", n, err)
	}
	right, err := opener.openStream(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer right.Close()
	s := <-got
	if s == nil {
		t.Fatal("the forward did not get its stream")
	}
	s.Close()
	again, err := opener.openStream(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if n, err := again.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("a name used twice: the stream reads %d, %v", n, err)
	}
	if n := taker.refused.Load(); n != 2 {
		t.Errorf("refused %d streams, want 2", n)
	}
}

// kin pipe's inner SSH connection (OpenSSH's, in use) runs on a stream
// beside the outer one when the QUIC runs end to end, inside a channel
// otherwise; either way it reaches the server's SSH and authenticates on
// its own.
func TestPipeGoesOnAStream(t *testing.T) {
	e, bob, port := sumEnv(t)
	for _, end := range []bool{true, false} {
		c, conn := e.dialLanesBound(bob, nil, end)
		p, err := c.Pipe(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		inner, err := NewClient(e.ctx, p, ClientConfig{Identity: bob, HostKey: e.host.Public()})
		if err != nil {
			t.Fatalf("end to end %v: SSH inside the pipe: %v", end, err)
		}
		data := []byte("through the pipe")
		remote, err := inner.DialPort(e.ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sumOfSent(t, remote, data), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
			t.Fatalf("end to end %v: the service got other bytes", end)
		}
		inner.Close()
		want := 0
		if end {
			want = 1
		}
		if n := conn.streamsOpened(); n != want {
			t.Errorf("end to end %v: %d streams opened, want %d", end, n, want)
		}
	}
}

// A stream channel's payload from the client never panics the server, and
// what parses names a port and a whole stream name, and marshals back.
func FuzzStreamRequest(f *testing.F) {
	id := newStreamID()
	f.Add(ssh.Marshal(streamTCP{Host: "localhost", Port: 8080, OriginHost: "127.0.0.1", Stream: id[:]}))
	f.Add(ssh.Marshal(directTCPIP{Host: "localhost", Port: 22}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, id, err := parseStreamTCP(b)
		if err != nil {
			return
		}
		again, id2, err := parseStreamTCP(ssh.Marshal(streamTCP{Host: d.Host, Port: d.Port, OriginHost: d.OriginHost, OriginPort: d.OriginPort, Stream: id[:]}))
		if err != nil || again != d || id2 != id {
			t.Fatalf("%x parses to %+v %x, which does not round-trip", b, d, id)
		}
	})
}
