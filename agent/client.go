package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"kin/keys"
	"kin/transport"
)

// ErrNoAgent means no agent listens on the control socket.
var ErrNoAgent = errors.New("no agent (kin up) runs for this kin home")

// ErrOffline is returned by Dial when the peer is not online.
var ErrOffline = errors.New("peer is not online")

// Hello asks the agent of home who it is. ErrNoAgent when none runs.
func Hello(ctx context.Context, home string) (Reply, error) {
	c, r, err := call(ctx, home, Request{Op: OpHello})
	if err != nil {
		return r, err
	}
	c.Close()
	return r, nil
}

// Dial asks the agent of home to connect to peer's registration instance
// ("" = its listener) and returns the peer connection's byte stream. The
// caller authenticates the peer (SSH host key) over it.
func Dial(ctx context.Context, home string, peer keys.PeerID, instance string) (net.Conn, Reply, error) {
	return call(ctx, home, Request{Op: OpDial, Peer: peer, Instance: instance})
}

// dialedConn is a peer connection the agent dialed for this command: its
// lanes and streams beside SSH's come through the agent too, each on a
// control connection of its own (OpLane, OpStream), so a command that
// goes through the agent gets them as one that dials alone does
// (session.LaneConn).
type dialedConn struct {
	net.Conn
	home, name string
	binding    []byte
}

func (c *dialedConn) HasLanes() bool  { return true }
func (c *dialedConn) Binding() []byte { return c.binding }

func (c *dialedConn) side(ctx context.Context, op string, accept bool) (net.Conn, error) {
	s, _, err := call(ctx, c.home, Request{Op: op, Conn: c.name, Accept: accept})
	if err != nil {
		return nil, fmt.Errorf("%s through the agent: %w", op, err)
	}
	return s, nil
}

func (c *dialedConn) OpenLane(ctx context.Context) (net.Conn, error) {
	return c.side(ctx, OpLane, false)
}

func (c *dialedConn) AcceptLane(ctx context.Context) (net.Conn, error) {
	return c.side(ctx, OpLane, true)
}

func (c *dialedConn) OpenStream(ctx context.Context) (net.Conn, error) {
	return c.side(ctx, OpStream, false)
}

func (c *dialedConn) AcceptStream(ctx context.Context) (net.Conn, error) {
	return c.side(ctx, OpStream, true)
}

// Share asks the agent of home to serve port (UDP if udp) to holders of secret. The
// share lasts until the returned connection is closed; a read from it
// returns when the agent goes away (and the ticket with it).
func Share(ctx context.Context, home string, port int, udp bool, secret []byte) (net.Conn, Reply, error) {
	return call(ctx, home, Request{Op: OpShare, Port: port, UDP: udp, Secret: secret})
}

// Gone is closed once the agent at the other end of a Share's connection
// goes away (and the share with it), or the caller closes the connection.
func Gone(share net.Conn) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, share)
		close(gone)
	}()
	return gone
}

// call sends req and reads the reply; on success the connection stays open
// for what the operation does next.
func call(ctx context.Context, home string, req Request) (net.Conn, Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", SocketPath(home))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errConnRefused) {
			return nil, Reply{}, ErrNoAgent
		}
		return nil, Reply{}, fmt.Errorf("agent control socket: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.V = Version
	b, _ := json.Marshal(req)
	_, werr := c.Write(append(b, '\n'))
	// Even when the write failed, the agent may have said why (it refuses
	// another user before reading).
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		c.Close()
		switch {
		case ctx.Err() != nil:
			return nil, Reply{}, ctx.Err()
		case werr != nil:
			return nil, Reply{}, fmt.Errorf("agent control socket: %w", werr)
		}
		return nil, Reply{}, fmt.Errorf("no answer from the agent (kin up): %w", err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		c.Close()
		return nil, Reply{}, fmt.Errorf("bad answer from the agent: %w", err)
	}
	if !rep.OK {
		c.Close()
		if rep.Code == CodeOffline {
			return nil, rep, fmt.Errorf("%w (agent: %s)", ErrOffline, rep.Error)
		}
		return nil, rep, fmt.Errorf("the agent (kin up) says: %s", rep.Error)
	}
	if !stop() {
		c.Close()
		return nil, Reply{}, ctx.Err()
	}
	return &bufConn{Conn: c, r: br}, rep, nil
}

// bufConn reads what the reply's reader already buffered first.
type bufConn struct {
	net.Conn
	r io.Reader
}

// CloseWrite half-closes the control connection (a lane's or a stream's
// end of data).
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Info is the peer connection's, as the agent reported it.
func Info(r Reply) transport.Info {
	if r.Conn == nil {
		return transport.Info{Path: "through the agent"}
	}
	return *r.Conn
}
