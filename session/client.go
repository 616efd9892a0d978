package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
	"kin/session/files"
)

// Errors a client may get, wrapped with detail.
var (
	ErrHostKeyMismatch = errors.New("host key mismatch")
	ErrAuthRefused     = errors.New("refused")
	ErrPortNotAllowed  = errors.New("port not allowed")
	ErrFilesNotAllowed = errors.New("files not allowed")
	ErrShellNotAllowed = errors.New("shell not allowed")
	// ErrShellOff: the peer gives no shells to anyone right now (kin up
	// as root), whatever its friends file says; wrapped with
	// ErrShellNotAllowed.
	ErrShellOff         = errors.New("shells are off on that computer")
	ErrPipeNotAllowed   = errors.New("pipe not allowed")
	errConnectionClosed = errors.New("connection closed")
	// ErrConnectionLost: the connection under SSH failed (the peer went
	// away, or the network did); wrapped with the transport's error.
	ErrConnectionLost = errors.New("the connection was lost")
	errNoAuthLeft     = errors.New("the peer refused every way in we have")
)

// failWatchConn notes that a read or write on the connection failed, so
// that a handshake cut short is not taken for a refusal.
// It keeps the first error, which says why a connection ended: the SSH
// layer above tells its channels only that they ended (io.EOF).
type failWatchConn struct {
	net.Conn
	failed atomic.Bool
	first  atomic.Pointer[error]
}

func (c *failWatchConn) note(err error) {
	if err != nil {
		c.first.CompareAndSwap(nil, &err)
		c.failed.Store(true)
	}
}

func (c *failWatchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.note(err)
	return n, err
}

func (c *failWatchConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.note(err)
	return n, err
}

// lost returns, wrapped in ErrConnectionLost, why the connection failed;
// nil while it has not. A connection failed before the SSH layer ends
// its channels, so a channel's error can be checked against it.
func (c *failWatchConn) lost() error {
	if p := c.first.Load(); p != nil {
		if errors.Is(*p, io.EOF) {
			return fmt.Errorf("%w: the other side closed it", ErrConnectionLost)
		}
		return fmt.Errorf("%w: %w", ErrConnectionLost, *p)
	}
	return nil
}

// ClientConfig says who we are and whom we meant to reach.
type ClientConfig struct {
	Identity *keys.Identity
	HostKey  ssh.PublicKey // the peer we meant: any other host key is refused
	Secret   []byte        // ticket secret; nil when connecting as a friend
	Logger   *slog.Logger
}

// Client is an SSH connection to a kin peer.
type Client struct {
	conn    *failWatchConn
	ssh     *ssh.Client
	hostKey ssh.PublicKey
	id      *keys.Identity
	log     *slog.Logger
	lanes   *laneHub // nil: the connection has no extra lanes
	// noStreams: the peer refused a streamChannel (its kin is older, or
	// its side found the QUIC not end to end): forwards use direct-tcpip.
	noStreams atomic.Bool
}

// NewClient runs the SSH client handshake over conn.
func NewClient(ctx context.Context, conn net.Conn, cfg ClientConfig) (*Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	want := cfg.HostKey.Marshal()
	auth := []ssh.AuthMethod{ssh.PublicKeys(cfg.Identity.Signer)}
	if cfg.Secret != nil {
		// A ticket names what this connection is for, so it goes first,
		// even for a friend (whose key alone would not carry the ticket's
		// grant). Auth happens after the host key check below passed.
		auth = []ssh.AuthMethod{ssh.Password(string(cfg.Secret))}
	}
	sc := &ssh.ClientConfig{
		User: "kin",
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !bytes.Equal(key.Marshal(), want) {
				return fmt.Errorf("%w: the peer that answered is not the one you meant (expected %s, got %s); the signaling server may be misbehaving",
					ErrHostKeyMismatch, ssh.FingerprintSHA256(cfg.HostKey), ssh.FingerprintSHA256(key))
			}
			return nil
		},
		HostKeyAlgorithms: []string{cfg.HostKey.Type()},
		ClientVersion:     "SSH-2.0-kin",
	}
	// We have one way in (our key, or the ticket's secret): once the peer
	// has refused it, or does not offer it, the handshake ends in
	// errNoAuthLeft; a transport that failed ends it with its own error.
	method := "publickey"
	if cfg.Secret != nil {
		method = "password"
	}
	watched := &failWatchConn{Conn: conn}
	sc.AuthCallback = func(ac *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
		if !watched.failed.Load() && (slices.Contains(ac.TriedMethods, method) || !slices.Contains(ac.AllowedMethods, method)) {
			return nil, errNoAuthLeft
		}
		return nil, nil // the next method from Auth, or the transport's error
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, chans, reqs, err := ssh.NewClientConn(watched, "kin", sc)
	stop()
	conn.SetDeadline(time.Time{})
	if err != nil {
		switch {
		case errors.Is(err, ErrHostKeyMismatch):
		case errors.Is(err, errNoAuthLeft):
			if cfg.Secret != nil {
				err = fmt.Errorf("%w: the ticket was not accepted (the sharer stopped, or it was for a different run)", ErrAuthRefused)
			} else {
				err = fmt.Errorf("%w: the peer does not know your key (and you have no ticket)", ErrAuthRefused)
			}
		case ctx.Err() != nil:
			err = fmt.Errorf("ssh handshake: %w", ctx.Err())
		default:
			err = fmt.Errorf("ssh handshake: %w", err)
		}
		return nil, err
	}
	cl := &Client{conn: watched, ssh: ssh.NewClient(c, chans, reqs), hostKey: cfg.HostKey, id: cfg.Identity, log: cfg.Logger,
		lanes: newLaneHub(conn, cfg.Logger)}
	cl.lanes.bindClient(cl.ssh)
	return cl, nil
}

// CheckPort asks whether the peer lets us use port. If ctx ends before the
// peer answers, it returns ctx's error; the answer, when it comes, is
// dropped.
func (c *Client) CheckPort(ctx context.Context, port int) error {
	type reply struct {
		ok  bool
		err error
	}
	got := make(chan reply, 1)
	go func() {
		ok, _, err := c.ssh.SendRequest(checkPortRequest, true, ssh.Marshal(portMsg{uint32(port)}))
		got <- reply{ok, err}
	}()
	var r reply
	select {
	case r = <-got:
	case <-ctx.Done():
		return fmt.Errorf("ask about port %d: %w", port, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("ask about port %d: %w", port, r.err)
	}
	if !r.ok {
		return fmt.Errorf("%w: the peer does not allow you port %d (or does not share it)", ErrPortNotAllowed, port)
	}
	return nil
}

// DialPort opens a connection to the peer's port. If ctx ends before the
// peer answers, it returns ctx's error, and closes the channel should the
// peer open it later.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	type opened struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	got := make(chan opened, 1)
	// On a connection whose QUIC runs end to end, the bytes go on a
	// stream beside SSH's (streamChannel); else, or if the peer's kin does
	// not know streams, inside the channel.
	streams := c.lanes.endToEnd() && !c.noStreams.Load()
	id := newStreamID()
	go func() {
		if streams {
			ch, reqs, err := c.openStreamed(streamChannel, ssh.Marshal(streamTCP{Host: "localhost", Port: uint32(port), OriginHost: "127.0.0.1", Stream: id[:]}))
			if ch != nil || err != nil {
				got <- opened{ch, reqs, err}
				return
			}
			streams = false
		}
		ch, reqs, err := c.ssh.OpenChannel("direct-tcpip", ssh.Marshal(directTCPIP{Host: "localhost", Port: uint32(port), OriginHost: "127.0.0.1"}))
		got <- opened{ch, reqs, err}
	}()
	var o opened
	select {
	case o = <-got:
	case <-ctx.Done():
		go func() {
			if o := <-got; o.err == nil {
				go ssh.DiscardRequests(o.reqs)
				o.ch.Close()
			}
		}()
		return nil, fmt.Errorf("port %d: %w", port, ctx.Err())
	}
	if err := o.err; err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
			return nil, fmt.Errorf("%w: %s", ErrPortNotAllowed, oe.Message)
		}
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("port %d: %s", port, oe.Message)
		}
		return nil, fmt.Errorf("port %d: %w", port, err)
	}
	if !streams {
		c.log.Debug("forwarded connection", "port", port, "on", "SSH channel")
		return newChannelConn(o.ch, o.reqs, c.ssh), nil
	}
	c.log.Debug("forwarded connection", "port", port, "on", "QUIC stream")
	conn, err := c.onStream(ctx, o.ch, o.reqs, id)
	if err != nil {
		return nil, fmt.Errorf("port %d: %w", port, err)
	}
	return conn, nil
}

// openStreamed opens a channel of typ whose payload names a stream beside
// SSH's for its bytes. All nil: the peer has no streams here (its kin is
// older, or its side found the QUIC not end to end), and the caller asks
// for the plain channel.
func (c *Client) openStreamed(typ string, payload []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	ch, reqs, err := c.ssh.OpenChannel(typ, payload)
	var oe *ssh.OpenChannelError
	if errors.As(err, &oe) && (oe.Reason == ssh.UnknownChannelType || oe.Message == errNoStreams) {
		c.noStreams.Store(true)
		return nil, nil, nil
	}
	return ch, reqs, err
}

// onStream opens the stream id names, for the channel ch the peer
// accepted; closing either closes both.
func (c *Client) onStream(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, id streamID) (net.Conn, error) {
	go ssh.DiscardRequests(reqs)
	st, err := c.lanes.openStream(ctx, id)
	if err != nil {
		ch.Close()
		return nil, err
	}
	return &streamForward{Conn: st, ch: ch}, nil
}

// Forward serves ln: each accepted connection goes to the peer's port over
// its own channel. It returns nil when ctx ends and an error when the SSH
// connection does or ln fails; either way ln is closed, and every
// forwarded connection has ended.
func (c *Client) Forward(ctx context.Context, ln net.Listener, port int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := make(chan error, 1)
	go func() { lost <- c.ssh.Wait() }()
	// why is set before closing is closed, and closing before ln is
	// closed: an accept error seen after closing is closed is ours.
	var why error
	closing := make(chan struct{})
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case err := <-lost:
			if err == nil {
				err = errConnectionClosed
			}
			why = err
			cancel() // stops forwarded connections still dialling
		}
		close(closing)
		ln.Close()
		mu.Lock()
		for conn := range open {
			conn.Close() // idle keep-alive connections would otherwise hold us
		}
		mu.Unlock()
	}()
	defer wg.Wait()
	for {
		local, err := ln.Accept()
		if err != nil {
			select {
			case <-closing:
				return why
			default:
				cancel() // ln failed on its own: stop the rest too
				return fmt.Errorf("accept: %w", err)
			}
		}
		mu.Lock()
		open[local] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(open, local)
				mu.Unlock()
			}()
			remote, err := c.DialPort(ctx, port)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("forwarded connection failed", "port", port, "err", err)
				}
				local.Close()
				return
			}
			stop := context.AfterFunc(ctx, func() { remote.Close() })
			defer stop()
			pipe(remote, local)
		}()
	}
}

// ForwardConn carries local to the peer's port over a channel of its own
// until both directions have ended or ctx ends. local is closed when it
// returns, and when the port cannot be opened.
func (c *Client) ForwardConn(ctx context.Context, local net.Conn, port int) error {
	remote, err := c.DialPort(ctx, port)
	if err != nil {
		local.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		local.Close()
		remote.Close()
	})
	defer stop()
	pipe(remote, local)
	return nil
}

// Push sends plan to the peer's inbox.
func (c *Client) Push(ctx context.Context, plan *files.Plan, progress func(files.Progress)) (files.Stats, error) {
	ch, err := c.open(pushChannel, ErrFilesNotAllowed)
	if err != nil {
		return files.Stats{}, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	st, err := files.SendWith(ctx, ch, plan, c.lanes.options(), progress)
	c.log.Debug("files sent", "bytes", st.Sent, "lanes", st.Lanes, "err", err)
	return st, c.why(err)
}

// why explains err, from a channel, by the connection's failure if it
// failed.
func (c *Client) why(err error) error {
	if err == nil {
		return nil
	}
	lost := c.conn.lost()
	switch {
	case lost == nil:
		return err
	case errors.Is(err, *c.conn.first.Load()): // the channel's error says why already
		return fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	return fmt.Errorf("%w (%w)", lost, err)
}

// Pull receives what the peer offers into inbox; decide may decline.
func (c *Client) Pull(ctx context.Context, inbox *files.Inbox, decide func(files.Offer) error, progress func(files.Progress)) ([]files.Result, error) {
	ch, err := c.open(pullChannel, ErrFilesNotAllowed)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	res, err := inbox.ReceiveWith(ctx, ch, ssh.FingerprintSHA256(c.hostKey), c.lanes.options(), decide, progress)
	return res, c.why(err)
}

// NewSession opens a standard SSH session channel (a shell or a command).
func (c *Client) NewSession() (*ssh.Session, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
			if why, ok := strings.CutPrefix(oe.Message, shellOffPrefix); ok {
				return nil, fmt.Errorf("%w: %w: %s", ErrShellNotAllowed, ErrShellOff, why)
			}
			return nil, fmt.Errorf("%w: %s", ErrShellNotAllowed, oe.Message)
		}
		return nil, err
	}
	return s, nil
}

func (c *Client) open(typ string, prohibited error) (ssh.Channel, error) {
	ch, reqs, err := c.ssh.OpenChannel(typ, nil)
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
			return nil, fmt.Errorf("%w: %s", prohibited, oe.Message)
		}
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

// Pipe opens a channel that carries a whole SSH connection to the peer
// (kin pipe: OpenSSH runs inside it). The peer's host key was checked when
// this connection was made, so nothing written to the channel reaches
// anyone but the peer meant.
func (c *Client) Pipe(ctx context.Context) (net.Conn, error) {
	// On a connection whose QUIC runs end to end, OpenSSH's bytes go on a
	// stream beside SSH's (they are encrypted by OpenSSH already).
	if c.lanes.waitEndToEnd(ctx) && !c.noStreams.Load() {
		id := newStreamID()
		ch, reqs, err := c.openStreamed(pipeStreamChannel, ssh.Marshal(streamName{id[:]}))
		var oe *ssh.OpenChannelError
		switch {
		case ch != nil:
			conn, err := c.onStream(ctx, ch, reqs, id)
			if err != nil {
				return nil, fmt.Errorf("open pipe: %w", err)
			}
			c.log.Debug("pipe", "on", "QUIC stream")
			return conn, nil
		case errors.As(err, &oe) && oe.Reason == ssh.Prohibited:
			return nil, fmt.Errorf("%w: %s", ErrPipeNotAllowed, oe.Message)
		case err != nil:
			return nil, fmt.Errorf("open pipe: %w", err)
		} // no streams: the channel, below
	}
	ch, reqs, err := c.ssh.OpenChannel(pipeChannel, nil)
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
			return nil, fmt.Errorf("%w: %s", ErrPipeNotAllowed, oe.Message)
		}
		if errors.As(err, &oe) && oe.Reason == ssh.UnknownChannelType {
			return nil, fmt.Errorf("%w: the peer's kin is too old for kin pipe", ErrPipeNotAllowed)
		}
		return nil, fmt.Errorf("open pipe: %w", err)
	}
	return newChannelConn(ch, reqs, c.ssh), nil
}

// Wait returns when the SSH connection ends.
func (c *Client) Wait() error { return c.ssh.Wait() }

// Close closes the connection.
func (c *Client) Close() error {
	err := c.ssh.Close()
	c.lanes.close()
	return err
}

// channelConn is an SSH channel as a net.Conn (without deadlines); its
// addresses are those of the connection that carries it.
type channelConn struct {
	ssh.Channel
	ends   ssh.ConnMetadata
	closed chan struct{} // see Closed; nil when nobody watches
}

// newChannelConn wraps a channel this side opened on conn, discarding its
// requests and watching for its end.
func newChannelConn(ch ssh.Channel, reqs <-chan *ssh.Request, conn ssh.ConnMetadata) *channelConn {
	c := &channelConn{Channel: ch, ends: conn, closed: make(chan struct{})}
	go func() {
		ssh.DiscardRequests(reqs) // returns when the channel is closed
		close(c.closed)
	}()
	return c
}

// Closed is closed once the channel has ended both ways: the peer closed
// it, or the connection was lost. Whatever the peer sent before stays
// readable. (Client.Pipe and Client.DialPort conns only.)
func (c *channelConn) Closed() <-chan struct{} { return c.closed }

func (c *channelConn) LocalAddr() net.Addr             { return c.ends.LocalAddr() }
func (c *channelConn) RemoteAddr() net.Addr            { return c.ends.RemoteAddr() }
func (channelConn) SetDeadline(t time.Time) error      { return errors.ErrUnsupported }
func (channelConn) SetReadDeadline(t time.Time) error  { return errors.ErrUnsupported }
func (channelConn) SetWriteDeadline(t time.Time) error { return errors.ErrUnsupported }
