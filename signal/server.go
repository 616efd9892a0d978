package signal

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"kin/keys"
)

// ServerConfig sets the server's limits and hooks; zero values get defaults
// that protect a small machine.
type ServerConfig struct {
	MaxConns        int     // total connections; default 10000
	MaxMessageBytes int64   // default 64 KiB
	Rate            float64 // messages per second per connection; default 50
	Burst           int     // default 100
	// RegisterRate limits new connections per second from one IP address
	// (burst RegisterBurst); defaults 5 and 50. Behind a reverse proxy on
	// the same machine, the address is the first of X-Forwarded-For.
	RegisterRate  float64
	RegisterBurst int
	// IdleTimeout closes a connection that has not answered a keepalive
	// ping for this long; default 60s.
	IdleTimeout time.Duration
	// ICEServers returns the STUN/TURN servers (with credentials) handed to
	// a peer when it registers; nil hands out none.
	ICEServers func(id keys.PeerID) []ICEServer
	// Bus, if set, joins this server to others: messages for peers
	// registered elsewhere go through it (see RedisBus).
	Bus Bus
	// RelayStats, if set, are exported with the server's metrics.
	RelayStats *RelayStats
	// TLS, if set, makes Serve speak wss:// (https for /metrics).
	TLS    *tls.Config
	Logger *slog.Logger
}

func (c *ServerConfig) defaults() {
	if c.MaxConns <= 0 {
		c.MaxConns = 10000
	}
	if c.RegisterRate <= 0 {
		c.RegisterRate = 5
	}
	if c.RegisterBurst <= 0 {
		c.RegisterBurst = 50
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.Rate <= 0 {
		c.Rate = 50
	}
	if c.Burst <= 0 {
		c.Burst = 100
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// registerTimeout bounds how long a connection may stay unregistered.
const registerTimeout = 10 * time.Second

// sendQueue bounds what the server buffers for one slow client.
const sendQueue = 256

// Server routes messages between registered peers. It is an http.Handler
// for the WebSocket endpoint.
type Server struct {
	cfg     ServerConfig
	metrics *metrics

	mu    sync.Mutex
	conns map[*conn]struct{}
	peers map[keys.PeerID][]*conn // newest last; offers go to the newest listener
	// routes ties a session of a peer to the registration in it, so that
	// answers and candidates reach the process that sent or took the offer.
	routes map[routeKey]*conn
	perIP  map[string]*ipLimit
	busMu  sync.Mutex // orders Join/Leave on the bus

	closed  bool
	wg      sync.WaitGroup // one per client, serving it
	writers sync.WaitGroup // one per client with a writer running
}

// NewServer makes a server; Serve runs it on a listener, or mount
// Handler (or the Server itself, the WebSocket endpoint) in net/http.
func NewServer(cfg ServerConfig) *Server {
	cfg.defaults()
	s := &Server{cfg: cfg, conns: map[*conn]struct{}{}, peers: map[keys.PeerID][]*conn{}, routes: map[routeKey]*conn{}, perIP: map[string]*ipLimit{}}
	s.metrics = newMetrics(s, cfg.RelayStats)
	return s
}

// clientIP is the address a connection comes from: the peer's, or what a
// reverse proxy on this machine says in X-Forwarded-For.
func clientIP(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if addr := net.ParseIP(ip); addr != nil && addr.IsLoopback() {
		if fwd, _, _ := strings.Cut(r.Header.Get("X-Forwarded-For"), ","); strings.TrimSpace(fwd) != "" {
			return strings.TrimSpace(fwd)
		}
	}
	return ip
}

// ipLimit is one address's registration budget.
type ipLimit struct {
	lim  *rate.Limiter
	seen time.Time
}

// allowIP spends one connection from ip's budget.
func (s *Server) allowIP(ip string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.perIP) > 4*s.cfg.MaxConns { // forget idle addresses
		for k, l := range s.perIP {
			if now.Sub(l.seen) > time.Minute {
				delete(s.perIP, k)
			}
		}
	}
	l := s.perIP[ip]
	if l == nil {
		l = &ipLimit{lim: rate.NewLimiter(rate.Limit(s.cfg.RegisterRate), s.cfg.RegisterBurst)}
		s.perIP[ip] = l
	}
	l.seen = now
	return l.lim.AllowN(now, 1)
}

type counts struct{ peers, conns int }

func (s *Server) count() counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return counts{peers: len(s.peers), conns: len(s.conns)}
}

// Healthy says whether the server takes new connections.
func (s *Server) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed
}

// conn is one client. An idle client costs no goroutine of kin's own
// beyond the one reading from it: a writer runs only while messages are
// queued, and keepalive pings run from a timer (measured: 10,000 peers
// fit in less memory this way).
type conn struct {
	ws       *websocket.Conn
	id       keys.PeerID
	mode     string // ModeListen, ModeDial or ModeTicket
	instance string
	sessions []routeKey // this conn's entries in Server.routes, oldest first; under Server.mu
	ctx      context.Context
	cancel   context.CancelFunc

	qmu     sync.Mutex
	queue   []Message
	writing bool
	held    bool            // queue, but do not write, until welcome
	closing bool            // going away: close once the queue is written
	writers *sync.WaitGroup // the server's count of running writers
}

// Online reports whether a peer is registered on this instance right now.
func (s *Server) Online(id keys.PeerID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers[id]) > 0
}

// current is id's newest registration.
func (s *Server) current(id keys.PeerID) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.peers[id]; len(l) > 0 {
		return l[len(l)-1]
	}
	return nil
}

// routeKey is one peer's side of one session.
type routeKey struct {
	id      keys.PeerID
	session string
}

// maxSessionsPerConn bounds the routes one connection holds; the oldest
// are forgotten first (a forgotten session's late messages take the
// fallback in destination).
const maxSessionsPerConn = 1024

// destination is the registration m, addressed to m.To, goes to (nil when
// none here; see the Mode constants for the rules). An offer's choice is
// remembered for the rest of its session.
func (s *Server) destination(m Message) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := routeKey{m.To, m.Session}
	if c := s.routes[key]; c != nil {
		return c
	}
	l := s.peers[m.To]
	if m.Type == TypeOffer {
		for i := len(l) - 1; i >= 0; i-- {
			c := l[i]
			if (m.Instance != "" && c.instance == m.Instance && c.mode != ModeDial) ||
				(m.Instance == "" && c.mode == ModeListen) {
				s.remember(key, c)
				return c
			}
		}
		return nil
	}
	// Not part of a session we know (its registration is gone, or it is
	// presence): the newest listener, else the newest registration.
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].mode == ModeListen {
			return l[i]
		}
	}
	if len(l) > 0 {
		return l[len(l)-1]
	}
	return nil
}

// listening reports whether id has a registration here that takes offers
// without an instance.
func (s *Server) listening(id keys.PeerID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.peers[id] {
		if c.mode == ModeListen {
			return true
		}
	}
	return false
}

// remember routes key to c; s.mu is held.
func (s *Server) remember(key routeKey, c *conn) {
	if old := s.routes[key]; old == c {
		return
	}
	s.routes[key] = c
	c.sessions = append(c.sessions, key)
	if len(c.sessions) > maxSessionsPerConn {
		if s.routes[c.sessions[0]] == c {
			delete(s.routes, c.sessions[0])
		}
		c.sessions = c.sessions[1:]
	}
}

// ServeHTTP upgrades to a WebSocket and serves one client.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The Origin check is off on purpose. It exists to stop a web page
	// from using a visitor's cookies or other ambient authority on a
	// WebSocket, and this server grants none: it reads no cookies or
	// headers for identity, and a client proves its key by signing a fresh
	// challenge, which a page can do only with a key of its own. A page
	// opened on this server's network can therefore do only what any
	// client there can: register its own key, reach peers whose IDs it
	// knows, and use the relay, which reaches public addresses only (see
	// TURNConfig.RelayAllow). kin's clients are not browsers and send no
	// Origin; a browser-based client on any origin keeps working.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.cfg.Logger.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(s.cfg.MaxMessageBytes)
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{ws: ws, ctx: ctx, cancel: cancel, writers: &s.writers}
	if !s.allowIP(clientIP(r), time.Now()) {
		s.metrics.refuse(RefusedRegisterRate)
		s.cfg.Logger.Warn("refused connection: too many from one address", "remote", r.RemoteAddr)
		s.refuse(ctx, ws, CodeRateLimit, "too many connections from your address; try again in a few seconds")
		cancel()
		return
	}

	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.refuse(ctx, ws, CodeGoingAway, "server is shutting down")
		cancel()
		return
	case len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		s.metrics.refuse(RefusedFull)
		s.cfg.Logger.Warn("refused connection: server full", "remote", r.RemoteAddr)
		s.refuse(ctx, ws, CodeFull, "server is full; try again later")
		cancel()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	// The connection is hijacked: serve it on a fresh goroutine and return,
	// so net/http's request and connection state are freed (about 3 KB
	// per idle client, measured) and the client's goroutine starts small.
	remote := r.RemoteAddr
	go func() {
		defer s.wg.Done()
		defer s.drop(c)
		s.serve(ctx, c, remote)
	}()
}

func (s *Server) refuse(ctx context.Context, ws *websocket.Conn, code, reason string) {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	writeMessage(wctx, ws, Message{V: Version, Type: TypeError, Code: code, Reason: reason})
	ws.Close(websocket.StatusTryAgainLater, reason)
}

func (s *Server) drop(c *conn) {
	c.cancel()
	s.mu.Lock()
	delete(s.conns, c)
	for _, k := range c.sessions {
		if s.routes[k] == c {
			delete(s.routes, k)
		}
	}
	c.sessions = nil
	if c.id != "" {
		l := s.peers[c.id]
		for i, x := range l {
			if x == c {
				l = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(s.peers, c.id)
		} else {
			s.peers[c.id] = l
		}
	}
	s.mu.Unlock()
	c.ws.CloseNow()
	if c.id != "" {
		s.syncBus(c.id)
	}
}

// syncBus makes the bus deliver id's messages here exactly while id has a
// registration here.
func (s *Server) syncBus(id keys.PeerID) {
	if s.cfg.Bus == nil {
		return
	}
	s.busMu.Lock()
	defer s.busMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if s.Online(id) {
		err = s.cfg.Bus.Join(ctx, id)
	} else {
		err = s.cfg.Bus.Leave(ctx, id)
	}
	if err != nil {
		s.cfg.Logger.Error("signaling bus", "id", id, "err", err)
	}
}

// Deliver hands m, routed by another instance through the bus, to the peer
// it is for if that peer is registered here.
func (s *Server) Deliver(m Message) {
	if dst := s.destination(m); dst != nil {
		s.metrics.route(m.Type)
		if !dst.send(m) {
			s.metrics.refuse(RefusedSlow)
			dst.cancel()
		}
	}
}

func writeMessage(ctx context.Context, ws *websocket.Conn, m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageText, b)
}

// DecodeMessage parses one frame from a client and checks the fields its
// type needs. It is the server's only parser of outside input.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("not a JSON message: %w", err)
	}
	if m.V != Version {
		return m, fmt.Errorf("protocol version %d not supported (want %d)", m.V, Version)
	}
	switch m.Type {
	case TypeRegister:
		if m.Key == "" || len(m.Sig) == 0 {
			return m, errors.New("register needs key and sig")
		}
		if m.Mode != ModeListen && m.Mode != ModeDial && m.Mode != ModeTicket {
			return m, fmt.Errorf("unknown registration mode %q", m.Mode)
		}
	case TypeOffer, TypeAnswer:
		if !m.To.Valid() || m.Session == "" || m.SDP == "" {
			return m, fmt.Errorf("%s needs to, session and sdp", m.Type)
		}
	case TypeCandidate, TypeBye, TypePresence:
		if !m.To.Valid() || m.Session == "" {
			return m, fmt.Errorf("%s needs to and session", m.Type)
		}
	default:
		return m, fmt.Errorf("unknown message type %q", m.Type)
	}
	if len(m.Session) > 64 {
		return m, errors.New("session ID too long")
	}
	if len(m.Instance) > MaxInstance {
		return m, errors.New("instance name too long")
	}
	return m, nil
}

func (s *Server) serve(ctx context.Context, c *conn, remote string) {
	// Log lines carry the client's address and ID as arguments; a logger
	// per client (slog's With) would cost memory for every idle one.
	log := func(level slog.Level, msg string, args ...any) {
		s.cfg.Logger.Log(context.Background(), level, msg, append([]any{"remote", remote, "id", c.id}, args...)...)
	}
	c.keepalive(s.cfg.IdleTimeout/2, func(err error) {
		s.metrics.refuse(RefusedIdle)
		log(slog.LevelDebug, "keepalive failed", "err", err)
	})

	// Registration.
	nonce := newNonce()
	c.send(Message{V: Version, Type: TypeChallenge, Nonce: nonce})
	rctx, rcancel := context.WithTimeout(ctx, registerTimeout)
	_, b, err := c.ws.Read(rctx)
	rcancel()
	if err != nil {
		log(slog.LevelDebug, "no registration", "err", err)
		return
	}
	m, err := DecodeMessage(b)
	if err == nil && m.Type != TypeRegister {
		err = errors.New("first message must be register")
	}
	var id keys.PeerID
	if err == nil {
		// Signature checks need deep stacks; on a goroutine of their own
		// they do not leave this long-lived one with a grown stack (16 KB
		// instead of 8 KB per idle client, measured).
		done := make(chan struct{})
		go func() {
			defer close(done)
			id, err = verifyRegistration(m, nonce)
		}()
		<-done
	}
	if err != nil {
		s.metrics.refuse(RefusedAuth)
		log(slog.LevelWarn, "refused registration", "err", err)
		s.closeWith(ctx, c, CodeAuth, err.Error())
		return
	}
	c.id, c.mode, c.instance = id, m.Mode, m.Instance
	// Messages routed to c from now on wait until "registered" is written
	// first: a client takes any other first message as a failed
	// registration, and an offer routed in the window (while the bus learns
	// of c) was lost.
	c.hold()
	s.mu.Lock()
	s.peers[id] = append(s.peers[id], c)
	n := len(s.peers[id])
	s.mu.Unlock()
	s.syncBus(id)
	if n > 1 {
		log(slog.LevelDebug, "another registration of this peer", "registrations", n, "mode", m.Mode, "instance", m.Instance)
	}
	var ice []ICEServer
	if s.cfg.ICEServers != nil {
		ice = s.cfg.ICEServers(id)
	}
	c.welcome(Message{V: Version, Type: TypeRegistered, From: id, ICEServers: ice})
	log(slog.LevelDebug, "registered")

	limiter := rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
	strikes := 0
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				// The library already closed with StatusMessageTooBig.
				s.metrics.refuse(RefusedTooBig)
			}
			log(slog.LevelDebug, "connection ended", "err", err)
			return
		}
		m, err := DecodeMessage(b)
		switch {
		case typ != websocket.MessageText:
			strikes++
			s.metrics.refuse(RefusedBadMessage)
			c.send(Message{V: Version, Type: TypeError, Code: CodeBadMsg, Reason: "binary frames are not used"})
		case err != nil || m.Type == TypeRegister:
			strikes++
			s.metrics.refuse(RefusedBadMessage)
			reason := "already registered"
			if err != nil {
				reason = err.Error()
			}
			c.send(Message{V: Version, Type: TypeError, Code: CodeBadMsg, Reason: reason, Session: m.Session})
		case !limiter.Allow():
			strikes++
			s.metrics.refuse(RefusedRateLimit)
			c.send(Message{V: Version, Type: TypeError, Code: CodeRateLimit, Reason: "too many messages; slow down", Session: m.Session, To: m.To})
		default:
			s.route(ctx, c, m)
		}
		if strikes > 20 {
			log(slog.LevelWarn, "closing abusive connection")
			s.closeWith(ctx, c, CodeBadMsg, "too many bad messages")
			return
		}
	}
}

// route forwards m from c to its addressee, here or through the bus, or
// tells c the peer is offline.
func (s *Server) route(ctx context.Context, c *conn, m Message) {
	m.From = c.id
	if m.Type == TypeOffer {
		// The answer and candidates come back to this registration.
		s.mu.Lock()
		s.remember(routeKey{c.id, m.Session}, c)
		s.mu.Unlock()
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if m.Type == TypePresence {
		online := s.listening(m.To)
		if !online && s.cfg.Bus != nil {
			var err error
			if online, err = s.cfg.Bus.Online(bctx, m.To); err != nil {
				s.cfg.Logger.Error("signaling bus", "err", err)
			}
		}
		if online {
			c.send(Message{V: Version, Type: TypePresence, From: m.To, Session: m.Session})
		} else {
			c.send(Message{V: Version, Type: TypeError, Code: CodeOffline, To: m.To, Session: m.Session, Reason: "peer is not online"})
		}
		return
	}
	dst := s.destination(m)
	if dst == nil && s.cfg.Bus != nil {
		ok, err := s.cfg.Bus.Publish(bctx, m)
		if err != nil {
			s.cfg.Logger.Error("signaling bus", "err", err)
		}
		if ok {
			return // the instance holding the peer counts it
		}
	}
	if dst == nil {
		if m.Type != TypeBye {
			s.metrics.refuse(RefusedOffline)
			c.send(Message{V: Version, Type: TypeError, Code: CodeOffline, To: m.To, Session: m.Session, Reason: "peer is not online"})
		}
		return
	}
	s.metrics.route(m.Type)
	if !dst.send(m) {
		s.metrics.refuse(RefusedSlow)
		s.cfg.Logger.Warn("dropping slow client", "id", dst.id)
		dst.cancel()
	}
}

// send queues m without blocking; false when the queue is full. After
// goAway nothing more is sent.
func (c *conn) send(m Message) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		return true
	}
	if len(c.queue) >= sendQueue {
		return false
	}
	c.queue = append(c.queue, m)
	if !c.held {
		c.startWriter()
	}
	return true
}

// hold makes send queue without writing until welcome.
func (c *conn) hold() {
	c.qmu.Lock()
	c.held = true
	c.qmu.Unlock()
}

// welcome writes m ahead of everything queued while held, then the rest.
func (c *conn) welcome(m Message) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.queue = append([]Message{m}, c.queue...)
	c.held = false
	c.startWriter()
}

// goAway queues m as the last message; the writer closes the connection
// once it is written.
func (c *conn) goAway(m Message) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		return
	}
	c.queue = append(c.queue, m)
	c.closing = true
	c.startWriter()
}

// startWriter runs flush unless it runs already; c.qmu is held.
func (c *conn) startWriter() {
	if !c.writing {
		c.writing = true
		c.writers.Add(1)
		go c.flush()
	}
}

// flush writes the queue in order, then ends; after goAway it closes the
// connection (a WebSocket close handshake: the client reads everything
// before it).
func (c *conn) flush() {
	defer c.writers.Done()
	for {
		c.qmu.Lock()
		if c.held && !c.closing {
			c.writing = false
			c.qmu.Unlock()
			return
		}
		if len(c.queue) == 0 {
			closing := c.closing
			c.queue, c.writing = nil, false
			c.qmu.Unlock()
			if closing {
				c.ws.Close(websocket.StatusGoingAway, "server is shutting down")
				c.cancel()
			}
			return
		}
		m := c.queue[0]
		c.queue = c.queue[1:]
		c.qmu.Unlock()
		wctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		err := writeMessage(wctx, c.ws, m)
		cancel()
		if err != nil {
			c.cancel()
			c.qmu.Lock()
			c.queue, c.writing = nil, false
			c.qmu.Unlock()
			return
		}
	}
}

// keepalive pings the client every interval until the connection ends; a
// ping unanswered within interval calls dead and ends it.
func (c *conn) keepalive(interval time.Duration, dead func(error)) {
	var t *time.Timer
	t = time.AfterFunc(interval, func() {
		pctx, cancel := context.WithTimeout(c.ctx, interval)
		err := c.ws.Ping(pctx)
		cancel()
		switch {
		case c.ctx.Err() != nil:
		case err != nil:
			dead(err)
			c.cancel()
		default:
			t.Reset(interval)
		}
	})
	context.AfterFunc(c.ctx, func() { t.Stop() })
}

func (s *Server) closeWith(ctx context.Context, c *conn, code, reason string) {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	writeMessage(wctx, c.ws, Message{V: Version, Type: TypeError, Code: code, Reason: reason})
	c.ws.Close(websocket.StatusPolicyViolation, reason)
}

// drainTimeout bounds how long Close waits for clients to take the
// going-away notice and what was queued before it.
const drainTimeout = 5 * time.Second

// Close tells every client the server is going away, refuses new ones,
// and drains: each client gets what was queued for it, then the notice,
// then a WebSocket close. Clients that have not taken theirs within
// drainTimeout are cut off. Close returns when every client's goroutines
// have ended.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway(Message{V: Version, Type: TypeError, Code: CodeGoingAway, Reason: "server is shutting down; reconnect"})
	}
	cutOff := time.AfterFunc(drainTimeout, func() {
		for _, c := range conns {
			c.cancel()
			c.ws.CloseNow()
		}
	})
	defer cutOff.Stop()
	s.wg.Wait()
	s.writers.Wait()
	return nil
}
