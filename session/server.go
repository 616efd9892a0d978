// Package session runs kin's SSH connection over any net.Conn: who may
// connect (friends by key, ticket holders by secret), and the services they
// reach on it: forwarded ports, files, and shells.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
	"kin/session/files"
	"kin/session/shell"
)

// Channel and request types kin adds to SSH.
const (
	pushChannel      = "kin-push@kin"       // client sends files to the server's inbox
	pullChannel      = "kin-pull@kin"       // client receives the files the server offers
	checkPortRequest = "kin-check-port@kin" // may I use this port?
	pipeChannel      = "kin-pipe@kin"       // a whole SSH connection inside this one (kin pipe)
	// streamChannel asks for a port as direct-tcpip does, and names the
	// QUIC stream beside SSH's that carries the connection's bytes (QUIC
	// alone, where SSH inside QUIC would encrypt them twice); only on a
	// connection whose QUIC runs end to end (laneHub.endToEnd).
	streamChannel = "kin-tcp@kin"
	// pipeStreamChannel is pipeChannel whose bytes go on the QUIC stream
	// it names (streamName).
	pipeStreamChannel = "kin-pipe-stream@kin"
)

// Grant is what an authenticated client may do, and who it is.
type Grant struct {
	Name   string // friend name, or "ticket" for a ticket holder
	Key    ssh.PublicKey
	Perms  keys.Permissions
	Ticket bool

	redeem Redeem // set when connected with an invite: all it may do is join
}

func (g Grant) who() string {
	if g.Ticket {
		return g.Name // a ticket proves no key
	}
	return g.Name + " (" + g.fingerprint() + ")"
}

func (g Grant) fingerprint() string {
	if g.Key == nil {
		return "no key"
	}
	return ssh.FingerprintSHA256(g.Key)
}

// FileHooks let the program watch and shape file transfers.
type FileHooks struct {
	// Offered sees an incoming push's offer; an error declines it.
	Offered func(g Grant, o files.Offer) error
	// Progress reports a running transfer (push or pull).
	Progress func(g Grant, p files.Progress)
	// Done reports a finished transfer: sent is true for a pull (we sent).
	Done func(g Grant, sent bool, st files.Stats, err error)
}

// ServerConfig says who may connect and what they reach.
type ServerConfig struct {
	Identity *keys.Identity                               // its key is the SSH host key
	Friends  func() *keys.Friends                         // read at every authentication; nil = no friends
	Tickets  func(secret []byte) (keys.Permissions, bool) // nil = no tickets
	Invites  func(secret []byte) (Redeem, bool)           // pairing invites (kin join); nil = none
	Ports    map[int]string                               // exposed port -> local address to dial
	UDPPorts map[int]string                               // exposed UDP port -> local address to send to (udp.go)
	UDP      UDPOptions                                   // UDP mappings' idle time and counters
	AnyPort  bool                                         // also expose every localhost port a grant allows (kin up)
	Inbox    *files.Inbox                                 // where pushed files go; nil = refuse pushes
	Outbox   *files.Plan                                  // what pulls get; nil = refuse pulls
	Files    FileHooks
	Shell    *shell.Config // nil = no shells for anyone
	ShellOff string        // with Shell nil: why, told to a friend allowed a shell (who gets ErrShellOff)
	Backups  string        // friends with files (no shell) get sftp in Backups/NAME; "" = not
	Logger   *slog.Logger
}

// Server accepts kin SSH connections.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
}

// NewServer checks the config and makes a server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Identity == nil {
		return nil, errors.New("session server needs an identity")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// The grant travels from the auth callbacks to the connection in
// ssh.Permissions.Extensions: x/crypto hands over, in
// ServerConn.Permissions, the Permissions of the method and key that
// actually authenticated (CVE-2024-45337: a callback may have run for
// keys the client offered but never proved).
const (
	extName   = "kin-name@kin"   // friend name, or "ticket"
	extKey    = "kin-key@kin"    // the proven public key, wire format (friends only)
	extPerms  = "kin-perms@kin"  // Permissions.String()
	extTicket = "kin-ticket@kin" // "yes" for a ticket holder
	extInvite = "kin-invite@kin" // the invite secret (an invite holder may only join)
)

func grantPermissions(g Grant) *ssh.Permissions {
	ext := map[string]string{extName: g.Name, extPerms: g.Perms.String()}
	if g.Key != nil {
		ext[extKey] = string(g.Key.Marshal())
	}
	if g.Ticket {
		ext[extTicket] = "yes"
	}
	return &ssh.Permissions{Extensions: ext}
}

// grantOf reads the grant the successful auth callback returned.
func grantOf(p *ssh.Permissions) (*Grant, error) {
	if p == nil || p.Extensions[extName] == "" {
		return nil, errors.New("authenticated without a grant")
	}
	ext := p.Extensions
	g := &Grant{Name: ext[extName], Ticket: ext[extTicket] == "yes"}
	if s := ext[extPerms]; s != "nothing" {
		if err := g.Perms.ParsePermission(s); err != nil {
			return nil, fmt.Errorf("grant: %w", err)
		}
	}
	if k, ok := ext[extKey]; ok {
		key, err := ssh.ParsePublicKey([]byte(k))
		if err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		g.Key = key
	}
	if g.Ticket == (g.Key != nil) {
		return nil, errors.New("grant is neither a friend's key nor a ticket")
	}
	return g, nil
}

// inviteOf gives an invite holder's grant what redeeming the invite
// does; the invite is looked up again, as it may have been used meanwhile.
func (s *Server) inviteOf(g *Grant, p *ssh.Permissions) error {
	secret, ok := p.Extensions[extInvite]
	if !ok {
		return nil
	}
	if s.cfg.Invites == nil {
		return errors.New("invite grant without invites")
	}
	redeem, ok := s.cfg.Invites([]byte(secret))
	if !ok {
		return errors.New("the invite is no longer valid")
	}
	g.redeem = redeem
	return nil
}

// sshConfig makes the SSH config for one connection. The callbacks keep
// no state but the last key offered, which only labels a refusal.
func (s *Server) sshConfig(offered *ssh.PublicKey) *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			*offered = key
			if s.cfg.Friends == nil {
				return nil, errors.New("not a friend")
			}
			f, ok := s.cfg.Friends().ByKey(key)
			if !ok {
				return nil, errors.New("not a friend")
			}
			return grantPermissions(Grant{Name: f.Name, Key: key, Perms: f.Perms}), nil
		},
		PasswordCallback: func(meta ssh.ConnMetadata, secret []byte) (*ssh.Permissions, error) {
			if s.cfg.Invites != nil {
				if _, ok := s.cfg.Invites(secret); ok {
					p := grantPermissions(Grant{Name: "invite", Ticket: true})
					p.Extensions[extInvite] = string(secret)
					return p, nil
				}
			}
			if s.cfg.Tickets == nil {
				return nil, errors.New("no tickets")
			}
			perms, ok := s.cfg.Tickets(secret)
			if !ok {
				return nil, errors.New("bad ticket")
			}
			// A ticket proves no key: whatever key was offered before
			// is not part of this grant.
			return grantPermissions(Grant{Name: "ticket", Perms: perms, Ticket: true}), nil
		},
		ServerVersion: "SSH-2.0-kin",
	}
	c.AddHostKey(s.cfg.Identity.Signer)
	return c
}

// ServeConn runs the SSH handshake on conn and serves it until the
// connection ends or ctx is done; conn is closed when it returns. peer
// labels the logs (untrusted).
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, peer string) error {
	defer conn.Close()
	log := s.log.With("peer", peer)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // ctx ends a handshake too
	var offered ssh.PublicKey
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.sshConfig(&offered))
	stop()
	conn.SetDeadline(time.Time{})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("ssh handshake: %w", ctx.Err())
	}
	if err != nil {
		key := "none"
		if offered != nil {
			key = ssh.FingerprintSHA256(offered)
		}
		log.Warn("refused connection: not a friend and no valid ticket", "offered_key", key, "err", err)
		return fmt.Errorf("ssh handshake: %w", err)
	}
	g, err := grantOf(sc.Permissions)
	if err == nil {
		err = s.inviteOf(g, sc.Permissions)
	}
	if err != nil {
		sc.Close()
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "no grant")
		}
		return err
	}
	log = log.With("who", g.who())
	log.Info("connected", "allowed", g.Perms.String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		sc.Close()
	}()
	go s.watchGrant(ctx, g, sc, log)
	lanes := newLaneHub(conn, log)
	defer lanes.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for req := range reqs {
			switch req.Type {
			case joinRequest:
				s.join(g, sc.SessionID(), req, log)
				continue
			case bindRequest:
				lanes.bindServer(req)
				continue
			}
			s.globalRequest(g, req, log)
		}
	}()
	for nc := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.channel(ctx, g, nc, sc, lanes, log)
		}()
	}
	log.Info("disconnected")
	return sc.Wait()
}

type portMsg struct{ Port uint32 }

func (s *Server) globalRequest(g *Grant, req *ssh.Request, log *slog.Logger) {
	switch req.Type {
	case checkUDPPortRequest:
		s.checkUDPPort(g, req, log)
	case checkPortRequest:
		var m portMsg
		ok := ssh.Unmarshal(req.Payload, &m) == nil && s.portAllowed(g, int(m.Port))
		if !ok {
			log.Warn("refused port", "port", m.Port)
		}
		req.Reply(ok, nil)
	default:
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
}

func (s *Server) portAllowed(g *Grant, port int) bool {
	_, exposed := s.cfg.Ports[port]
	return (exposed || s.cfg.AnyPort) && g.Perms.AllowsPort(port)
}

// portAddress is where a forwarded port is dialled.
func (s *Server) portAddress(port int) string {
	if a, ok := s.cfg.Ports[port]; ok {
		return a
	}
	return net.JoinHostPort("localhost", strconv.Itoa(port))
}

// regrantInterval is how often a live friend connection is checked
// against the friends file, so removing a friend cuts them off.
const regrantInterval = 2 * time.Second

// watchGrant closes sc when g's friend is removed or their permissions
// change, and returns when ctx ends.
func (s *Server) watchGrant(ctx context.Context, g *Grant, sc *ssh.ServerConn, log *slog.Logger) {
	if g.Ticket || s.cfg.Friends == nil {
		return
	}
	t := time.NewTicker(regrantInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f, ok := s.cfg.Friends().ByKey(g.Key)
			if !ok || f.Perms.String() != g.Perms.String() {
				log.Warn("friends file changed: closing this friend's connection")
				sc.Close()
				return
			}
		}
	}
}

// channel serves one channel the client opened.
func (s *Server) channel(ctx context.Context, g *Grant, nc ssh.NewChannel, sc *ssh.ServerConn, lanes *laneHub, log *slog.Logger) {
	switch nc.ChannelType() {
	case "direct-tcpip":
		s.forward(ctx, g, nc, nil, log)
	case streamChannel:
		if !lanes.endToEnd() {
			nc.Reject(ssh.ConnectionFailed, errNoStreams)
			return
		}
		s.forward(ctx, g, nc, lanes, log)
	case udpChannel:
		s.forwardUDP(ctx, g, nc, log)
	case pushChannel:
		if !g.Perms.Files || s.cfg.Inbox == nil {
			log.Warn("refused files", "why", "no files permission")
			nc.Reject(ssh.Prohibited, "you may not send files here")
			return
		}
		ch := acceptData(nc)
		if ch == nil {
			return
		}
		defer ch.Close()
		log.Info("receiving files")
		decide := func(o files.Offer) error {
			if s.cfg.Files.Offered != nil {
				return s.cfg.Files.Offered(*g, o)
			}
			return nil
		}
		res, err := s.cfg.Inbox.ReceiveWith(ctx, ch, g.fingerprint(), lanes.options(), decide, s.progress(g))
		log.Info("files received", "files", len(res), "err", err)
		if s.cfg.Files.Done != nil {
			s.cfg.Files.Done(*g, false, files.Stats{Results: res}, err)
		}
	case pullChannel:
		if !g.Perms.Files || s.cfg.Outbox == nil {
			log.Warn("refused files", "why", "nothing to pull")
			nc.Reject(ssh.Prohibited, "there are no files for you here")
			return
		}
		ch := acceptData(nc)
		if ch == nil {
			return
		}
		defer ch.Close()
		log.Info("sending files")
		st, err := files.SendWith(ctx, ch, s.cfg.Outbox, lanes.options(), s.progress(g))
		log.Info("files sent", "bytes", st.Sent, "lanes", st.Lanes, "err", err)
		if s.cfg.Files.Done != nil {
			s.cfg.Files.Done(*g, true, st, err)
		}
	case pipeChannel, pipeStreamChannel:
		// kin pipe: the client checked our host key on this connection,
		// and now runs another SSH client (OpenSSH) inside this channel,
		// or on the stream it names. That connection authenticates on its
		// own, like any other.
		if g.Ticket {
			log.Warn("refused pipe", "why", "tickets do not carry kin pipe")
			nc.Reject(ssh.Prohibited, "kin pipe is for friends, not tickets")
			return
		}
		var await *streamWaiter
		if nc.ChannelType() == pipeStreamChannel {
			var m streamName
			if !lanes.endToEnd() {
				nc.Reject(ssh.ConnectionFailed, errNoStreams)
				return
			}
			if ssh.Unmarshal(nc.ExtraData(), &m) != nil || len(m.Stream) != len(streamID{}) {
				nc.Reject(ssh.ConnectionFailed, "malformed request")
				return
			}
			await = lanes.expectStream(streamID(m.Stream))
		}
		ch, fwd, err := acceptStreamed(ctx, nc, await)
		if err != nil {
			log.Warn("pipe failed", "why", err)
		}
		if ch == nil {
			return
		}
		var conn net.Conn = &channelConn{Channel: ch, ends: sc}
		if fwd != nil {
			conn = fwd
		}
		log.Info("pipe: an SSH connection inside this one")
		err = s.ServeConn(ctx, conn, "pipe from "+g.who())
		log.Info("pipe ended", "err", err)
	case "session":
		cfg, ok := s.sessionConfig(g)
		if !ok {
			why := "you may not open a shell here"
			if g.Perms.Shell && s.cfg.Shell == nil && s.cfg.ShellOff != "" {
				why = shellOffPrefix + s.cfg.ShellOff
			}
			log.Warn("refused shell", "why", why)
			nc.Reject(ssh.Prohibited, why)
			return
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		cfg.Logger = log
		shell.Serve(ctx, ch, reqs, cfg)
	default:
		nc.Reject(ssh.UnknownChannelType, "kin does not offer "+nc.ChannelType())
	}
}

func (s *Server) progress(g *Grant) func(files.Progress) {
	if s.cfg.Files.Progress == nil {
		return nil
	}
	return func(p files.Progress) { s.cfg.Files.Progress(*g, p) }
}

// acceptData accepts a channel that carries only data (no requests);
// nil if the peer went away meanwhile.
func acceptData(nc ssh.NewChannel) ssh.Channel {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return nil
	}
	go ssh.DiscardRequests(reqs)
	return ch
}

// directTCPIP is the RFC 4254 7.2 payload.
type directTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// streamTCP is streamChannel's payload: direct-tcpip's, and the stream's
// name.
type streamTCP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
	Stream     []byte
}

// parseStreamTCP reads a streamChannel's payload.
func parseStreamTCP(b []byte) (directTCPIP, streamID, error) {
	var st streamTCP
	if err := ssh.Unmarshal(b, &st); err != nil {
		return directTCPIP{}, streamID{}, err
	}
	if len(st.Stream) != len(streamID{}) {
		return directTCPIP{}, streamID{}, errors.New("bad stream name")
	}
	return directTCPIP{st.Host, st.Port, st.OriginHost, st.OriginPort}, streamID(st.Stream), nil
}

// streamName is pipeStreamChannel's payload.
type streamName struct{ Stream []byte }

// errNoStreams is the refusal of a streamChannel on a connection whose
// QUIC does not run end to end (or has none): the client asks again with
// direct-tcpip.
const errNoStreams = "no streams beside SSH on this connection"

// forward serves a forwarded TCP connection: over the channel
// (direct-tcpip), or, with streams, over the QUIC stream it names.
func (s *Server) forward(ctx context.Context, g *Grant, nc ssh.NewChannel, streams *laneHub, log *slog.Logger) {
	var d directTCPIP
	var id streamID
	var err error
	if streams != nil {
		d, id, err = parseStreamTCP(nc.ExtraData())
	} else {
		err = ssh.Unmarshal(nc.ExtraData(), &d)
	}
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, "malformed request")
		return
	}
	port := int(d.Port)
	switch {
	case d.Host != "localhost" && d.Host != "127.0.0.1" && d.Host != "::1":
		log.Warn("refused port", "host", d.Host, "port", port, "why", "only this machine's ports")
		nc.Reject(ssh.Prohibited, "only ports on this machine can be reached")
		return
	case !s.portAllowed(g, port):
		log.Warn("refused port", "port", port)
		nc.Reject(ssh.Prohibited, "port "+strconv.Itoa(port)+" is not open to you")
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	var dialer net.Dialer
	local, err := dialer.DialContext(dctx, "tcp", s.portAddress(port))
	cancel()
	if err != nil {
		log.Warn("local service did not answer", "port", port, "err", err)
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("nothing answers on port %d there", port))
		return
	}
	var await *streamWaiter
	if streams != nil {
		await = streams.expectStream(id) // before the client may open it
	}
	ch, fwd, err := acceptStreamed(ctx, nc, await)
	if err != nil {
		log.Warn("forwarded connection failed", "port", port, "why", err)
	}
	if ch == nil {
		local.Close()
		return
	}
	var remote io.ReadWriteCloser = ch
	if fwd != nil {
		remote = fwd
	}
	// A local service may never close its end: ctx ending closes it.
	stop := context.AfterFunc(ctx, func() { remote.Close(); local.Close() })
	defer stop()
	// Everything friends do is in the agent's log: one line as a forwarded
	// connection opens, one as it closes.
	log.Info("port forward opened", "port", port)
	start := time.Now()
	pipe(remote, local)
	log.Info("port forward closed", "port", port, "after", time.Since(start).Round(time.Millisecond))
}

// errStreamMissing: a channel's client never opened the stream it named.
var errStreamMissing = errors.New("its stream did not come")

// acceptStreamed accepts nc and, when w is set, takes the stream w waits
// for (fwd, whose closing closes the channel too). A nil channel: the
// client went away, or its stream did not come (errStreamMissing);
// nothing is left open then.
func acceptStreamed(ctx context.Context, nc ssh.NewChannel, w *streamWaiter) (ch ssh.Channel, fwd *streamForward, err error) {
	ch = acceptData(nc)
	if ch == nil {
		if w != nil {
			w.forget()
		}
		return nil, nil, nil
	}
	if w == nil {
		return ch, nil, nil
	}
	st := w.take(ctx)
	if st == nil {
		ch.Close()
		return nil, nil, errStreamMissing
	}
	return ch, &streamForward{Conn: st, ch: ch}, nil
}

// streamForward is a forwarded connection's stream with the channel that
// asked for it: closing one closes both.
type streamForward struct {
	net.Conn
	ch ssh.Channel
}

func (s *streamForward) Close() error {
	s.ch.Close()
	return s.Conn.Close()
}

func (s *streamForward) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.Close()
}

// pipe copies both ways with half-close (where an end can: SSH channels,
// TCP and QUIC streams), then closes both.
func pipe(a, b io.ReadWriteCloser) {
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src io.ReadWriteCloser) {
		defer wg.Done()
		copyGrowing(dst, src)
		if hc, ok := dst.(interface{ CloseWrite() error }); ok {
			hc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// shellOffPrefix starts the refusal of a session channel when the server
// gives no shells at all (ServerConfig.ShellOff): the client tells it
// apart from "not allowed for you" (ErrShellOff) by this wire text.
const shellOffPrefix = "shells are off here: "

// copyGrowing is io.Copy with a buffer that starts at io.Copy's 32 KiB
// and doubles, up to 256 KiB, while reads fill it: a bulk stream is read
// from its socket and handed to SSH in larger pieces (fewer system calls
// and wake-ups per byte; BenchmarkSSHOverConn in transport compares the
// sizes), while an interactive one keeps a small buffer.
func copyGrowing(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
			if n == len(buf) && len(buf) < 256<<10 {
				buf = make([]byte, 2*len(buf))
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
