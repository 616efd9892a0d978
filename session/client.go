package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
	"kin/session/files"
)

// Errors a client may get, wrapped with detail.
var (
	ErrHostKeyMismatch  = errors.New("host key mismatch")
	ErrAuthRefused      = errors.New("refused")
	ErrPortNotAllowed   = errors.New("port not allowed")
	ErrFilesNotAllowed  = errors.New("files not allowed")
	ErrShellNotAllowed  = errors.New("shell not allowed")
	ErrPipeNotAllowed   = errors.New("pipe not allowed")
	errConnectionClosed = errors.New("connection closed")
)

// ClientConfig says who we are and whom we meant to reach.
type ClientConfig struct {
	Identity *keys.Identity
	HostKey  ssh.PublicKey // the peer we meant: any other host key is refused
	Secret   []byte        // ticket secret; nil when connecting as a friend
	Logger   *slog.Logger
}

// Client is an SSH connection to a kin peer.
type Client struct {
	ssh     *ssh.Client
	hostKey ssh.PublicKey
	id      *keys.Identity
	log     *slog.Logger
	lanes   *laneHub // nil: the connection has no extra lanes
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
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, chans, reqs, err := ssh.NewClientConn(conn, "kin", sc)
	stop()
	conn.SetDeadline(time.Time{})
	if err != nil {
		switch {
		case errors.Is(err, ErrHostKeyMismatch):
		case strings.Contains(err.Error(), "unable to authenticate"):
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
	return &Client{ssh: ssh.NewClient(c, chans, reqs), hostKey: cfg.HostKey, id: cfg.Identity, log: cfg.Logger,
		lanes: newLaneHub(conn, cfg.Logger)}, nil
}

// CheckPort asks whether the peer lets us use port.
func (c *Client) CheckPort(ctx context.Context, port int) error {
	ok, _, err := c.ssh.SendRequest(checkPortRequest, true, ssh.Marshal(portMsg{uint32(port)}))
	if err != nil {
		return fmt.Errorf("ask about port %d: %w", port, err)
	}
	if !ok {
		return fmt.Errorf("%w: the peer does not allow you port %d (or does not share it)", ErrPortNotAllowed, port)
	}
	return nil
}

// DialPort opens a connection to the peer's port.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	ch, reqs, err := c.ssh.OpenChannel("direct-tcpip", ssh.Marshal(directTCPIP{Host: "localhost", Port: uint32(port), OriginHost: "127.0.0.1"}))
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
			return nil, fmt.Errorf("%w: %s", ErrPortNotAllowed, oe.Message)
		}
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("port %d: %s", port, oe.Message)
		}
		return nil, fmt.Errorf("port %d: %w", port, err)
	}
	go ssh.DiscardRequests(reqs)
	return &channelConn{Channel: ch}, nil
}

// Forward serves ln: each accepted connection goes to the peer's port over
// its own channel. It returns nil when ctx ends and an error when the SSH
// connection does; either way ln is closed.
func (c *Client) Forward(ctx context.Context, ln net.Listener, port int) error {
	lost := make(chan error, 1)
	go func() { lost <- c.ssh.Wait() }()
	stopped := make(chan struct{})
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	go func() {
		select {
		case <-ctx.Done():
		case err := <-lost:
			lost <- err
		}
		ln.Close()
		mu.Lock()
		for conn := range open {
			conn.Close() // idle keep-alive connections would otherwise hold us
		}
		mu.Unlock()
		close(stopped)
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		local, err := ln.Accept()
		if err != nil {
			select {
			case <-stopped:
			case <-time.After(time.Second):
				return fmt.Errorf("accept: %w", err)
			}
			if ctx.Err() != nil {
				return nil
			}
			select {
			case err := <-lost:
				if err == nil {
					err = errConnectionClosed
				}
				return err
			default:
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
				c.log.Warn("forwarded connection failed", "port", port, "err", err)
				local.Close()
				return
			}
			pipe(remote.(*channelConn).Channel, local)
		}()
	}
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
	return st, err
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
	return inbox.ReceiveWith(ctx, ch, ssh.FingerprintSHA256(c.hostKey), c.lanes.options(), decide, progress)
}

// NewSession opens a standard SSH session channel (a shell or a command).
func (c *Client) NewSession() (*ssh.Session, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) && oe.Reason == ssh.Prohibited {
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
func (c *Client) Pipe() (net.Conn, error) {
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
	go ssh.DiscardRequests(reqs)
	return &channelConn{Channel: ch}, nil
}

// Wait returns when the SSH connection ends.
func (c *Client) Wait() error { return c.ssh.Wait() }

// Close closes the connection.
func (c *Client) Close() error {
	err := c.ssh.Close()
	c.lanes.close()
	return err
}

// channelConn is an SSH channel as a net.Conn (without deadlines).
type channelConn struct{ ssh.Channel }

func (channelConn) LocalAddr() net.Addr                { return addr("kin") }
func (channelConn) RemoteAddr() net.Addr               { return addr("kin-peer") }
func (channelConn) SetDeadline(t time.Time) error      { return errors.ErrUnsupported }
func (channelConn) SetReadDeadline(t time.Time) error  { return errors.ErrUnsupported }
func (channelConn) SetWriteDeadline(t time.Time) error { return errors.ErrUnsupported }

type addr string

func (a addr) Network() string { return "ssh" }
func (a addr) String() string  { return string(a) }
