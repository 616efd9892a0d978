package session

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"kin/keys"
)

// A LocalPort checks the port with the peer and carries a local TCP
// connection to the service behind it, both ways.
func TestLocalPortForwardsToThePeersPort(t *testing.T) {
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	port := svc.Addr().(*net.TCPAddr).Port
	bob := ident(t)
	s := startServe(t, ServerConfig{
		Friends: friends(t, keys.Friend{Name: "bob", Key: bob.Public(), Perms: keys.Permissions{Ports: []int{port}}}),
		Ports:   map[int]string{port: svc.Addr().String()},
	})
	c := s.dial(bob)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := ListenLocal("127.0.0.1:0", port, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if strings.HasSuffix(l.String(), "/udp") {
		t.Fatalf("a TCP port named %s", l)
	}
	if err := l.Check(ctx, c); err != nil {
		t.Fatalf("check: %v", err)
	}
	if other, err := ListenLocal("127.0.0.1:0", port+1, false); err == nil {
		if err := other.Check(ctx, c); err == nil {
			t.Error("a port bob may not use passed the check")
		}
		other.Close()
	}
	l.Start(ctx, nil)
	done := make(chan error, 1)
	go func() { done <- l.Forward(ctx, c) }()
	conn, err := net.Dial("tcp", l.String())
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("kin ", 10000)
	go conn.Write([]byte(msg))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the forward: %v", err)
	}
	conn.Close()
	cancel()
	<-done
}
