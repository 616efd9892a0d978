package session

import (
	"context"
	"io"
	"net"
)

// Splice carries a stream over conn both ways, as kin pipe does for
// OpenSSH: in to the peer, the peer's bytes to out. Each way is drained,
// then half-closed: in's EOF becomes conn's EOF (CloseWrite), while the
// peer's reply is still written out to its end.
//
// Splice returns once the reply has ended and in has too, or the peer
// closed conn (a conn from Client.Pipe tells, through Closed), so that
// nothing more can go; when out fails (its reader is gone: nil); or when
// ctx ends (ctx's error). The copy from in may then still be blocked in
// in.Read: it ends with in's next read, or once the caller closes conn.
func Splice(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	up := make(chan struct{})
	go func() {
		defer close(up)
		copyGrowing(conn, in) // a write error means the peer closed conn
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	down := make(chan error, 1)
	go func() {
		_, err := copyGrowing(out, conn)
		down <- err
	}()
	var closed <-chan struct{} // nil (never) for a conn that cannot tell
	if cc, ok := conn.(interface{ Closed() <-chan struct{} }); ok {
		closed = cc.Closed()
	}
	select {
	case err := <-down:
		if err != nil {
			return nil // out's reader went away: nothing more can be delivered
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-up:
	case <-closed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
