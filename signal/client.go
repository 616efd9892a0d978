package signal

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// ClientConfig says where to register and as whom.
type ClientConfig struct {
	URL    string     // ws:// or wss://
	Signer ssh.Signer // the identity key
	// Mode says which offers this registration takes (ModeListen,
	// ModeDial, ModeTicket); Instance names it, for tickets to address.
	Mode     string
	Instance string
	Logger   *slog.Logger
	// Lost, when set, hears why the registration dropped, once per drop
	// (not per failed attempt to come back); Regained hears of each new
	// registration after a drop (not of the first one). Both run on Run's
	// goroutine and must return soon.
	Lost     func(err error)
	Regained func(Registration)
}

// Registration is what the server told us when we registered.
type Registration struct {
	ID         keys.PeerID
	ICEServers []ICEServer
}

// ErrRefused is returned by Ready when the server refused our registration.
var ErrRefused = errors.New("signaling server refused the registration")

// ErrUnreachable is returned by Ready when no connection to the server
// could be made (nothing listens there, or no route to it).
var ErrUnreachable = errors.New("cannot reach the signaling server")

// Client keeps one registration with a signaling server alive and carries
// routed messages both ways.
type Client struct {
	cfg ClientConfig
	in  chan Message

	mu      sync.Mutex
	ws      *websocket.Conn // current registered connection, nil when down
	reg     Registration
	lastErr error
	fatal   error
	changed chan struct{} // closed and replaced whenever ws/lastErr change

	// Run's goroutine only: registered now, and ever, for Lost/Regained.
	up, wasUp bool
}

// NewClient makes a client; Run connects it.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Client{cfg: cfg, in: make(chan Message, 256), changed: make(chan struct{})}
}

func (c *Client) setState(ws *websocket.Conn, reg *Registration, err error, fatal bool) {
	c.mu.Lock()
	c.ws = ws
	if reg != nil {
		c.reg = *reg
	}
	if err != nil {
		c.lastErr = err
		if fatal {
			c.fatal = err
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Run connects, registers and keeps the registration alive, reconnecting
// with backoff after any disconnect, until ctx is done (it then returns
// ctx's error) or the server refuses us for good (an error wrapping
// ErrRefused).
func (c *Client) Run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			c.setState(nil, nil, ctx.Err(), false)
			return ctx.Err()
		}
		var refused *refusedError
		var badCert *tls.CertificateVerificationError
		// A refused key or an untrusted certificate will not fix itself.
		fatal := (errors.As(err, &refused) && refused.code == CodeAuth) || errors.As(err, &badCert)
		c.setState(nil, nil, err, fatal)
		if c.up {
			c.up = false
			if c.cfg.Lost != nil {
				c.cfg.Lost(err)
			}
		}
		if fatal {
			c.cfg.Logger.Error("signaling server refused us", "err", err)
			return fmt.Errorf("%w: %v", ErrRefused, err)
		}
		if time.Since(start) > time.Minute {
			backoff = 250 * time.Millisecond // it was up for a while: retry fast
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.cfg.Logger.Debug("signaling connection lost; reconnecting", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			c.setState(nil, nil, ctx.Err(), false)
			return ctx.Err()
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

type refusedError struct{ code, reason string }

func (e *refusedError) Error() string { return fmt.Sprintf("%s (%s)", e.reason, e.code) }

// session runs one connection: dial, register, then read until it fails.
func (c *Client) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, c.cfg.URL, nil)
	cancel()
	if err != nil {
		var badCert *tls.CertificateVerificationError
		if errors.As(err, &badCert) {
			return fmt.Errorf("signaling server %s: %w", c.cfg.URL, err)
		}
		return fmt.Errorf("%w %s: %w", ErrUnreachable, c.cfg.URL, err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := readMessage(rctx, ws)
	if err != nil {
		return fmt.Errorf("signaling server %s: %w", c.cfg.URL, err)
	}
	if m.Type == TypeError {
		return &refusedError{m.Code, m.Reason}
	}
	if m.Type != TypeChallenge || len(m.Nonce) < 16 {
		return fmt.Errorf("signaling server %s sent %q instead of a challenge", c.cfg.URL, m.Type)
	}
	reg, err := signRegistration(c.cfg.Signer, m.Nonce)
	if err != nil {
		return err
	}
	reg.Mode, reg.Instance = c.cfg.Mode, c.cfg.Instance
	if err := writeMessage(rctx, ws, reg); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	m, err = readMessage(rctx, ws)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if m.Type == TypeError {
		return &refusedError{m.Code, m.Reason}
	}
	if m.Type != TypeRegistered {
		return fmt.Errorf("register: server answered %q", m.Type)
	}
	cancel()
	got := Registration{ID: m.From, ICEServers: m.ICEServers}
	c.setState(ws, &got, nil, false)
	c.cfg.Logger.Debug("registered", "id", m.From, "url", c.cfg.URL)
	if c.wasUp && c.cfg.Regained != nil {
		c.cfg.Regained(got)
	}
	c.up, c.wasUp = true, true
	defer c.setState(nil, nil, nil, false)
	for {
		m, err := readMessage(ctx, ws)
		if err != nil {
			return err
		}
		switch m.Type {
		case TypeOffer, TypeAnswer, TypeCandidate, TypeBye, TypePresence:
		case TypeError:
			if m.Code == CodeGoingAway {
				return errors.New("signaling server is restarting")
			}
			if m.Session == "" {
				c.cfg.Logger.Warn("signaling server error", "code", m.Code, "reason", m.Reason)
				continue
			}
		default:
			continue
		}
		select {
		case c.in <- m:
		default:
			c.cfg.Logger.Warn("dropping signaling message: nobody reads them", "type", m.Type)
		}
	}
}

func readMessage(ctx context.Context, ws *websocket.Conn) (Message, error) {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return Message{}, err
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("bad message from server: %w", err)
	}
	return m, nil
}

// Registration is the newest registration the server confirmed.
func (c *Client) Registration() Registration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reg
}

// Ready waits until the client is registered and returns the registration.
func (c *Client) Ready(ctx context.Context) (Registration, error) {
	for {
		c.mu.Lock()
		ws, reg, last, fatal, changed := c.ws, c.reg, c.lastErr, c.fatal, c.changed
		c.mu.Unlock()
		if ws != nil {
			return reg, nil
		}
		if fatal != nil {
			return Registration{}, fmt.Errorf("%w: %v", ErrRefused, fatal)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if last != nil {
				return Registration{}, last
			}
			return Registration{}, fmt.Errorf("not registered: %w", ctx.Err())
		}
	}
}

// Send sends one routed message; it fails when not registered right now.
func (c *Client) Send(ctx context.Context, m Message) error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		return errors.New("not connected to the signaling server")
	}
	m.V = Version
	return writeMessage(ctx, ws, m)
}

// Recv returns the next routed message (or a server error about one).
func (c *Client) Recv(ctx context.Context) (Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Online asks the server whether each peer is registered. It reads the
// answers with Recv, so nothing else may read from c meanwhile.
func (c *Client) Online(ctx context.Context, peers ...keys.PeerID) (map[keys.PeerID]bool, error) {
	online := make(map[keys.PeerID]bool, len(peers))
	asked := map[string]keys.PeerID{}
	for i, p := range peers {
		session := fmt.Sprintf("presence-%d", i)
		asked[session] = p
		if err := c.Send(ctx, Message{Type: TypePresence, To: p, Session: session}); err != nil {
			return nil, err
		}
	}
	for len(asked) > 0 {
		m, err := c.Recv(ctx)
		if err != nil {
			return nil, err
		}
		p, ok := asked[m.Session]
		if !ok {
			continue
		}
		delete(asked, m.Session)
		online[p] = m.Type == TypePresence
	}
	return online, nil
}
