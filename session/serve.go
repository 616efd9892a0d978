package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sync/errgroup"
)

// Listener hands over incoming connections until ctx ends.
//
// transport.Node's Accept returns a *transport.Conn, so it needs a
// ListenerFunc around it; mind Go's typed nil there:
//
//	session.ListenerFunc(func(ctx context.Context) (net.Conn, error) {
//		c, err := node.Accept(ctx)
//		if err != nil {
//			return nil, err // not c: a nil *Conn is a non-nil net.Conn
//		}
//		return c, nil
//	})
type Listener interface {
	Accept(ctx context.Context) (net.Conn, error)
}

// ListenerFunc is a function as a Listener.
type ListenerFunc func(ctx context.Context) (net.Conn, error)

// Accept calls f.
func (f ListenerFunc) Accept(ctx context.Context) (net.Conn, error) { return f(ctx) }

// Serve runs ServeConn on every connection l accepts, labelled with its
// RemoteAddr, until ctx ends (it then returns nil) or l fails (it returns
// l's error). Either way the connections it started are told to end, and
// Serve returns only once every one of them has. A listener with no more
// connections to give returns io.EOF: then the connections Serve started
// go on until they end by themselves (or ctx does), and Serve returns nil.
// A connection that fails (a stranger, a broken handshake) is logged, not
// returned.
func (s *Server) Serve(ctx context.Context, l Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			conn, err := l.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, io.EOF) {
					return nil
				}
				return fmt.Errorf("accept: %w", err)
			}
			g.Go(func() error {
				peer := conn.RemoteAddr().String()
				if err := s.ServeConn(ctx, conn, peer); err != nil && ctx.Err() == nil {
					s.log.Debug("connection ended", "peer", peer, "err", err)
				}
				return nil
			})
		}
	})
	return g.Wait()
}
