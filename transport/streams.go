package transport

// Streams beside SSH's: the session may open more streams on the
// connection's QUIC, for bytes that need no SSH around them (a forwarded
// TCP connection, once the session has checked that the QUIC runs end to
// end: Conn.Binding). Each is a net.Conn that half-closes (CloseWrite).
// Writes go straight to the stream: a write queue as SSH's stream has
// (coalesce.go) made kin connect slower here (loopback, side by side:
// 245 and 256 MB/s with it, 293 and 291 without), since a forwarded
// socket's reads are already large and the queue only copies them.

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// OpenStream opens another stream on the connection's QUIC, beside the one
// SSH runs on. Nothing reaches the peer until the first Write.
func (c *Conn) OpenStream(ctx context.Context) (net.Conn, error) {
	if c.qc == nil {
		return nil, ErrNoLanes
	}
	st, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return &streamConn{qc: c.qc, st: st}, nil
}

// AcceptStream returns the next stream the peer opened beside SSH's.
func (c *Conn) AcceptStream(ctx context.Context) (net.Conn, error) {
	if c.qc == nil {
		return nil, ErrNoLanes
	}
	st, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept stream: %w", err)
	}
	return &streamConn{qc: c.qc, st: st}, nil
}

// streamConn is one QUIC stream as a net.Conn.
type streamConn struct {
	qc *quic.Conn
	st *quic.Stream
}

func (s *streamConn) Read(p []byte) (int, error) {
	n, err := s.st.Read(p)
	if err != nil {
		err = laneErr("read", err)
	}
	return n, err
}

func (s *streamConn) Write(p []byte) (int, error) {
	n, err := s.st.Write(p)
	if err != nil {
		err = laneErr("write", err)
	}
	return n, err
}

// CloseWrite ends what this side sends: the peer reads EOF once it has
// everything before it.
func (s *streamConn) CloseWrite() error { return s.st.Close() }

// Close ends the stream both ways: what was written is still delivered,
// and the peer is told to stop sending.
func (s *streamConn) Close() error {
	s.st.CancelRead(quic.StreamErrorCode(quicCodeClosed))
	return s.st.Close()
}

func (s *streamConn) LocalAddr() net.Addr                { return s.qc.LocalAddr() }
func (s *streamConn) RemoteAddr() net.Addr               { return s.qc.RemoteAddr() }
func (s *streamConn) SetDeadline(t time.Time) error      { return s.st.SetDeadline(t) }
func (s *streamConn) SetReadDeadline(t time.Time) error  { return s.st.SetReadDeadline(t) }
func (s *streamConn) SetWriteDeadline(t time.Time) error { return s.st.SetWriteDeadline(t) }
