package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"kin/keys"
	"kin/session"
	"kin/transport"
)

// SocketPath is where the agent of the kin home directory home listens.
func SocketPath(home string) string {
	return filepath.Join(home, "agent", "control.sock")
}

// ErrAlreadyRunning is returned by Listen when an agent already answers
// on the socket.
var ErrAlreadyRunning = errors.New("an agent (kin up) already runs for this kin home")

// Handler does what commands ask; the agent implements it.
type Handler interface {
	// Hello fills in the agent's presence (ID, Signal, Instance, Inbox).
	Hello() Reply
	// Dial connects to a peer's registration ("" = its listener).
	Dial(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error)
	// Share serves port to holders of secret until stop is called.
	Share(port int, udp bool, secret []byte) (stop func(), err error)
}

// Server is the agent's end of the control socket.
type Server struct {
	ln    *net.UnixListener
	path  string
	owner int // the only user ID let in
	h     Handler
	log   *slog.Logger
	wg    sync.WaitGroup

	mu     sync.Mutex
	dialed map[string]session.LaneConn // connections dialed for commands, by Reply.Dialed
}

// dialedSize is the bytes of a dialed connection's random name.
const dialedSize = 16

// Listen opens the control socket of home for h: the directory is made
// 0700 and the socket 0600. A stale socket left by a killed agent is
// replaced; a live one is ErrAlreadyRunning.
func Listen(home string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	path := SocketPath(home)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, ErrAlreadyRunning
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{ln: ln, path: path, owner: os.Getuid(), h: h, log: log, dialed: map[string]session.LaneConn{}}, nil
}

// Path is the socket's file name.
func (s *Server) Path() string { return s.path }

// Serve answers commands until ctx ends; then it closes the socket and
// every control connection, and waits for them.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil // Close or ctx
			}
			return fmt.Errorf("control socket: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			done := context.AfterFunc(ctx, func() { c.Close() })
			defer done()
			if err := s.serveConn(ctx, c); err != nil {
				s.log.Debug("control connection", "err", err)
			}
		}()
	}
}

// Close stops listening; Serve returns once the open control connections
// end (they end with its ctx).
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) error {
	uid, err := peerUID(c)
	if err != nil && !errors.Is(err, errNoPeerCred) {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if err == nil && uid != s.owner {
		s.log.Warn("refused a control connection from another user", "uid", uid)
		writeReply(c, Reply{Error: "this agent belongs to another user"})
		return fmt.Errorf("uid %d is not the owner %d", uid, s.owner)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(c, MaxRequest)
	line, err := readLine(r)
	if err != nil {
		return err
	}
	req, err := ParseRequest(line)
	if err != nil {
		writeReply(c, Reply{Error: err.Error()})
		return err
	}
	c.SetReadDeadline(time.Time{})
	reply := s.h.Hello()
	switch req.Op {
	case OpHello:
		reply.OK = true
		return writeReply(c, reply)
	case OpShare:
		stopShare, err := s.h.Share(req.Port, req.UDP, req.Secret)
		if err != nil {
			reply.Error = err.Error()
			return writeReply(c, reply)
		}
		defer stopShare()
		reply.OK = true
		if err := writeReply(c, reply); err != nil {
			return err
		}
		s.log.Info("sharing a port for kin share", "port", keys.FormatPort(req.Port, req.UDP))
		io.Copy(io.Discard, r) // until the command closes it (or ctx ends)
		s.log.Info("stopped sharing a port for kin share", "port", keys.FormatPort(req.Port, req.UDP))
		return nil
	case OpLane, OpStream:
		if r.Buffered() > 0 {
			return fmt.Errorf("%s: bytes after the request, before the reply", req.Op)
		}
		s.mu.Lock()
		conn := s.dialed[req.Conn]
		s.mu.Unlock()
		if conn == nil {
			reply.Error = "no such connection (it ended?)"
			return writeReply(c, reply)
		}
		open := conn.OpenLane
		switch {
		case req.Op == OpLane && req.Accept:
			open = conn.AcceptLane
		case req.Op == OpStream && req.Accept:
			open = conn.AcceptStream
		case req.Op == OpStream:
			open = conn.OpenStream
		}
		side, err := untilGone(ctx, c, open)
		if err != nil {
			reply.Error = err.Error()
			writeReply(c, reply)
			return err
		}
		defer side.Close()
		reply.OK = true
		if err := writeReply(c, reply); err != nil {
			return err
		}
		return splice(c, side)
	case OpDial:
		if r.Buffered() > 0 {
			return errors.New("dial: bytes after the request, before the reply")
		}
		var info transport.Info
		conn, err := untilGone(ctx, c, func(ctx context.Context) (net.Conn, error) {
			conn, i, err := s.h.Dial(ctx, req.Peer, req.Instance)
			info = i
			return conn, err
		})
		if err != nil {
			reply.Error = err.Error()
			if errors.Is(err, transport.ErrPeerOffline) {
				reply.Code = CodeOffline
			}
			writeReply(c, reply)
			return err
		}
		defer conn.Close()
		reply.OK, reply.Conn = true, &info
		if sc, ok := conn.(session.LaneConn); ok && sc.HasLanes() {
			var name [dialedSize]byte
			rand.Read(name[:])
			reply.Dialed, reply.Binding = hex.EncodeToString(name[:]), sc.Binding()
			s.mu.Lock()
			s.dialed[reply.Dialed] = sc
			s.mu.Unlock()
			defer func() {
				s.mu.Lock()
				delete(s.dialed, reply.Dialed)
				s.mu.Unlock()
			}()
		}
		if err := writeReply(c, reply); err != nil {
			return err
		}
		s.log.Debug("command dialed through the agent", "peer", req.Peer, "path", info.Path)
		return splice(c, conn)
	}
	return nil
}

// untilGone runs f with a context that ends when the command gives up
// (Ctrl-C closes its socket) or ctx ends. Nothing may arrive from the
// command before the reply: bytes that did are an error too.
func untilGone(ctx context.Context, c *net.UnixConn, f func(context.Context) (net.Conn, error)) (net.Conn, error) {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan bool)
	go func() {
		var b [1]byte
		n, err := c.Read(b[:])
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
		watched <- n > 0
	}()
	conn, err := f(fctx)
	c.SetReadDeadline(time.Unix(1, 0))
	early := <-watched
	c.SetReadDeadline(time.Time{})
	if err == nil && (fctx.Err() != nil || early) {
		conn.Close()
		err = errors.New("the command went away meanwhile")
	}
	return conn, err
}

// readLine reads one request line of at most MaxRequest bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errors.New("request too long")
	}
	if err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	return line[:len(line)-1], nil
}

func writeReply(w io.Writer, r Reply) error {
	r.V = Version
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// splice copies both ways until either side ends, then closes both.
func splice(a, b net.Conn) error {
	errc := make(chan error, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			cw.CloseWrite()
			errc <- nil
			return
		}
		dst.Close()
		src.Close()
		errc <- err
	}
	go cp(a, b)
	go cp(b, a)
	err := <-errc
	if err2 := <-errc; err == nil {
		err = err2
	}
	a.Close()
	b.Close()
	return err
}
