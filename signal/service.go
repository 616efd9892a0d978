package signal

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/sync/errgroup"
)

// ServiceConfig is a whole signaling service, as kin signal runs it: the
// server, the built-in STUN/TURN beside it, and the Redis bus that joins
// it to other instances.
type ServiceConfig struct {
	// Server holds the limits and TLS; its ICEServers, RelayStats, Bus and
	// Logger are filled in from the rest.
	Server ServerConfig
	// TURN is the address of the built-in STUN/TURN, e.g. ":3478" (""
	// for none); Relay configures it (its Secret, Stats and Logger are
	// filled in).
	TURN  string
	Relay TURNConfig
	// ICEServers are handed out too, e.g. an external coturn that shares
	// Secret.
	ICEServers []ICEServer
	// Secret signs the TURN credentials handed out (coturn's
	// use-auth-secret); nil means a random one.
	Secret []byte
	// Redis joins other instances through this Redis URL ("": alone).
	Redis  string
	Logger *slog.Logger
}

// Which part of a service could not be opened (besides ErrNoRelayIP).
var (
	ErrTURNListen = errors.New("cannot serve STUN/TURN")
	ErrRedis      = errors.New("cannot join other instances through Redis")
)

// Service is a signaling server with what runs beside it.
type Service struct {
	Server *Server
	TURN   *TURN // the built-in STUN/TURN; nil when there is none
	bus    *RedisBus
	log    *slog.Logger
}

// OpenService opens what cfg asks for: the STUN/TURN sockets and the
// connection to Redis. Serve runs it all; a service that is not served
// must be closed with Close.
func OpenService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secret := cfg.Secret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	s := &Service{log: log}
	sc := cfg.Server
	servers := append([]ICEServer(nil), cfg.ICEServers...)
	if cfg.TURN != "" {
		tc := cfg.Relay
		tc.Secret = secret
		if tc.Stats == nil {
			tc.Stats = &RelayStats{}
		}
		tc.Logger = log.With("part", "turn")
		tn, err := ListenTURN(cfg.TURN, tc)
		switch {
		case errors.Is(err, ErrNoRelayIP):
			return nil, err
		case err != nil:
			return nil, fmt.Errorf("%w on %s: %w", ErrTURNListen, cfg.TURN, err)
		}
		s.TURN = tn
		sc.RelayStats = tc.Stats
		servers = append(servers, tn.ICEServers()...)
	}
	sc.ICEServers = ICEServersFor(servers, secret)
	sc.Logger = log.With("part", "signal-server")
	if cfg.Redis != "" {
		bus, err := NewRedisBus(ctx, cfg.Redis, log.With("part", "redis"))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: %w", ErrRedis, err)
		}
		s.bus, sc.Bus = bus, bus
	}
	s.Server = NewServer(sc)
	return s, nil
}

// Serve runs the server on ln, the STUN/TURN and the bus until ctx ends,
// and returns the server's error once all three have stopped. A failed
// STUN/TURN is logged; the server goes on without it.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	var g errgroup.Group
	ctx, cancel := context.WithCancel(ctx)
	defer g.Wait()
	defer cancel()
	if s.TURN != nil {
		g.Go(func() error {
			if err := s.TURN.Serve(ctx); err != nil {
				s.log.Error("STUN/TURN stopped", "err", err)
			}
			return nil
		})
	}
	if s.bus != nil {
		g.Go(func() error { return s.bus.Run(ctx, s.Server.Deliver) })
	}
	return s.Server.Serve(ctx, ln)
}

// Close frees what OpenService opened, for a service that is not served.
func (s *Service) Close() {
	if s.TURN != nil {
		s.TURN.Close()
	}
	if s.bus != nil {
		s.bus.ps.Close()
		s.bus.rdb.Close()
	}
}

// TLSFiles is the TLS set-up of a server with this certificate (PEM) and
// its private key (PEM) on disk.
func TLSFiles(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// TLSACME is the TLS set-up of a server with a Let's Encrypt certificate
// for domain (which needs port 443 reachable), kept in cacheDir.
func TLSACME(domain, cacheDir string) *tls.Config {
	m := &autocert.Manager{Prompt: autocert.AcceptTOS, HostPolicy: autocert.HostWhitelist(domain), Cache: autocert.DirCache(cacheDir)}
	return m.TLSConfig()
}
