package session

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"

	"kin/internal/testconn"
)

// silentPeer is an SSH server that lets anyone in and then never answers:
// global requests and channel opens arrive on its channels and wait there.
type silentPeer struct {
	requests chan *ssh.Request
	opens    chan ssh.NewChannel
}

// dialSilent connects a Client to a silentPeer over loopback TCP.
func dialSilent(t *testing.T) (*Client, *silentPeer) {
	t.Helper()
	host, me := ident(t), ident(t)
	a, b := testconn.TCPPair(t)
	p := &silentPeer{requests: make(chan *ssh.Request, 8), opens: make(chan ssh.NewChannel, 8)}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil },
	}
	cfg.AddHostKey(host.Signer)
	served := make(chan struct{})
	go func() {
		defer close(served)
		sc, chans, reqs, err := ssh.NewServerConn(b, cfg)
		if err != nil {
			b.Close()
			return
		}
		defer sc.Close()
		go func() {
			for r := range reqs {
				p.requests <- r
			}
		}()
		for nc := range chans {
			p.opens <- nc
		}
	}()
	c, err := NewClient(context.Background(), a, ClientConfig{Identity: me, HostKey: host.Public()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); <-served })
	return c, p
}

func TestCheckPortHonoursContext(t *testing.T) {
	c, peer := dialSilent(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.CheckPort(ctx, 80) }()
	<-peer.requests // asked, and no answer will come
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("CheckPort after cancel: %v", err)
	}
}

func TestDialPortHonoursContext(t *testing.T) {
	c, peer := dialSilent(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		conn, err := c.DialPort(ctx, 80)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	nc := <-peer.opens
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("DialPort after cancel: %v", err)
	}
	// A channel the peer opens after we gave up is closed, not leaked.
	ch, reqs, err := nc.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	if n, err := io.Copy(io.Discard, ch); n != 0 || err != nil {
		t.Fatalf("late channel: read %d bytes, %v; want a closed channel", n, err)
	}
	ch.Close()
}

// Forward returns when ctx ends even while a forwarded connection waits
// for a peer that never answers its channel open.
func TestForwardHonoursContext(t *testing.T) {
	c, peer := dialSilent(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Forward(ctx, ln, 80) }()
	local, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	nc := <-peer.opens // the channel open is waiting for an answer
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Forward after cancel: %v", err)
	}
	nc.Reject(ssh.ConnectionFailed, "too late")
	if n, _ := io.Copy(io.Discard, local); n != 0 {
		t.Fatalf("local connection got %d bytes", n)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the listener is still open after Forward returned")
	}
}

type brokenListener struct {
	net.Listener
	err error
}

func (b brokenListener) Accept() (net.Conn, error) { return nil, b.err }

// A listener that fails on its own ends Forward with its error.
func TestForwardReturnsListenerError(t *testing.T) {
	c, _ := dialSilent(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	broken := errors.New("listener broke")
	if err := c.Forward(context.Background(), brokenListener{ln, broken}, 80); !errors.Is(err, broken) {
		t.Fatalf("Forward over a broken listener: %v", err)
	}
}
