package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"kin/internal/testconn"
)

// pipeFriend is the far end of a kin pipe: an SSH server that hands the
// kin-pipe@kin channel to serve, with its TCP connection (to end it). It
// returns our client and the pipe it opened.
func pipeFriend(t *testing.T, serve func(ch ssh.Channel, tcp *net.TCPConn)) (*Client, net.Conn) {
	t.Helper()
	host := ident(t)
	a, b := testconn.TCPPair(t)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil },
	}
	cfg.AddHostKey(host.Signer)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc, chans, reqs, err := ssh.NewServerConn(b, cfg)
		if err != nil {
			b.Close()
			return
		}
		defer sc.Close()
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			if nc.ChannelType() != pipeChannel {
				nc.Reject(ssh.UnknownChannelType, "no")
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				return
			}
			go ssh.DiscardRequests(creqs)
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(ch, b.(*net.TCPConn))
			}()
		}
	}()
	c, err := NewClient(context.Background(), a, ClientConfig{Identity: ident(t), HostKey: host.Public()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); wg.Wait() })
	conn, err := c.Pipe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, conn
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// gatedWriter holds its first write until gate closes.
type gatedWriter struct {
	gate <-chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *gatedWriter) sum() ([32]byte, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return sha256.Sum256(w.buf.Bytes()), w.buf.Len()
}

// The friend answers after our stdin's EOF and then drops the whole
// connection: the reply still reaches stdout whole.
func TestSpliceReplyAfterStdinEOFArrivesWhole(t *testing.T) {
	request, reply := []byte("request"), randomBytes(t, 1<<20)
	c, conn := pipeFriend(t, func(ch ssh.Channel, tcp *net.TCPConn) {
		got, err := io.ReadAll(ch) // until our stdin's EOF
		if err != nil || !bytes.Equal(got, request) {
			t.Errorf("friend read %q, %v", got, err)
		}
		ch.Write(reply)
		// Not even the channel's own close: the connection ends. (Only
		// its sending half, so no TCP reset can discard the reply.)
		tcp.CloseWrite()
	})
	lost := make(chan struct{})
	go func() { c.Wait(); close(lost) }()
	// stdout takes nothing until the connection is gone, so the whole
	// reply is still on its way when it is.
	out := &gatedWriter{gate: lost}
	if err := Splice(context.Background(), conn, bytes.NewReader(request), out); err != nil {
		t.Fatal(err)
	}
	if sum, n := out.sum(); sum != sha256.Sum256(reply) {
		t.Fatalf("stdout got %d of %d reply bytes (or wrong ones)", n, len(reply))
	}
}

// The friend ends its reply before our stdin ends: everything stdin still
// has reaches the friend before kin pipe returns.
func TestSpliceStdinAfterReplyEOFArrivesWhole(t *testing.T) {
	reply, upload := []byte("reply"), randomBytes(t, 1<<20)
	replied := make(chan struct{})
	received := make(chan [32]byte, 1)
	_, conn := pipeFriend(t, func(ch ssh.Channel, _ *net.TCPConn) {
		ch.Write(reply)
		ch.CloseWrite()
		close(replied)
		got, _ := io.ReadAll(ch)
		received <- sha256.Sum256(got)
		ch.Close()
	})
	var out bytes.Buffer
	in := io.MultiReader(gateReader(replied), bytes.NewReader(upload))
	if err := Splice(context.Background(), conn, in, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != string(reply) {
		t.Fatalf("stdout: %q", out.String())
	}
	conn.Close()
	if <-received != sha256.Sum256(upload) {
		t.Fatal("the friend did not get the whole upload")
	}
}

// gateReader reads as empty once gate is closed.
type gateReader <-chan struct{}

func (g gateReader) Read([]byte) (int, error) {
	<-g
	return 0, io.EOF
}

// When the friend closes the pipe, kin pipe returns even though stdin
// stays open (OpenSSH closes it only once we are gone).
func TestSpliceEndsWhenFriendCloses(t *testing.T) {
	reply := randomBytes(t, 64<<10)
	_, conn := pipeFriend(t, func(ch ssh.Channel, _ *net.TCPConn) {
		ch.Write(reply)
		ch.Close()
	})
	in, stdin := io.Pipe()
	defer stdin.Close()
	var out bytes.Buffer
	if err := Splice(context.Background(), conn, in, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), reply) {
		t.Fatalf("stdout got %d of %d bytes", out.Len(), len(reply))
	}
}

// Ctrl-C ends kin pipe while both sides are still open.
func TestSpliceEndsWithContext(t *testing.T) {
	started := make(chan struct{})
	_, conn := pipeFriend(t, func(ch ssh.Channel, _ *net.TCPConn) {
		close(started)
		io.Copy(io.Discard, ch)
	})
	in, stdin := io.Pipe()
	defer stdin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Splice(ctx, conn, in, io.Discard) }()
	<-started
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("splice after cancel: %v", err)
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// When stdout fails, OpenSSH is gone: kin pipe returns quietly, without
// waiting for a stdin that may never end.
func TestSpliceEndsWhenStdoutFails(t *testing.T) {
	_, conn := pipeFriend(t, func(ch ssh.Channel, _ *net.TCPConn) {
		ch.Write([]byte("reply"))
		io.Copy(io.Discard, ch)
	})
	in, stdin := io.Pipe()
	defer stdin.Close()
	if err := Splice(context.Background(), conn, in, brokenWriter{}); err != nil {
		t.Fatalf("splice: %v", err)
	}
}
