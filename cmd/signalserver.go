package cmd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/acme/autocert"

	"kin/keys"
	"kin/signal"
)

// turnCredentialTTL is how long the TURN credentials handed to a peer at
// registration stay valid.
const turnCredentialTTL = 24 * time.Hour

func signalCommand() *cli.Command {
	return &cli.Command{
		Name:  "signal",
		Usage: "run a signaling server, where peers find each other",
		Description: `The signaling server only introduces peers: it routes WebRTC offers and
answers by peer ID and sees public keys, never data. It cannot impersonate
anyone, because peers check each other's SSH keys end to end.
    kin signal --listen :7000
    KIN_SIGNAL=ws://this-host:7000 kin share 3000

Behind NATs peers need STUN (to learn their public address) and, when no
direct path exists, a TURN relay. --turn serves both, built in:
    kin signal --listen :7000 --turn :3478 --public-ip 198.51.100.7
answers STUN and TURN on UDP 3478, TURN on TCP 3478 (for networks that
block UDP) and STUN on UDP 3479 (kin doctor compares the two views). Peers
that registered get TURN credentials valid for a day; nobody else can
allocate a relay. To use coturn instead, give it the same secret
(use-auth-secret, static-auth-secret=...) and hand it out:
    kin signal --turn-secret S --ice-server turn:turn.example.org:3478 \
               --ice-server stun:turn.example.org:3478

For the internet, serve wss:// (--acme DOMAIN with --listen :443, or
--tls-cert/--tls-key), and for many people run several instances behind a
load balancer, joined with --redis redis://HOST:6379/0. Prometheus metrics
are at /metrics and a health check at /healthz, on the same port. SIGTERM
tells every client to reconnect (elsewhere), then exits.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":7000", Usage: "TCP address for the WebSocket endpoint (also /metrics and /healthz)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "serve wss:// with this certificate (PEM; with --tls-key)"},
			&cli.StringFlag{Name: "tls-key", Usage: "the certificate's private key (PEM)"},
			&cli.StringFlag{Name: "acme", Usage: "serve wss:// with a Let's Encrypt certificate for this domain (needs port 443 reachable)"},
			&cli.StringFlag{Name: "acme-cache", Usage: "directory for ACME certificates (default: KIN_HOME/acme)"},
			&cli.StringFlag{Name: "redis", Usage: "join other instances through Redis, e.g. redis://host:6379/0"},
			&cli.IntFlag{Name: "max-conns", Value: 10000, Usage: "most connections at once"},
			&cli.IntFlag{Name: "max-message", Value: 64 << 10, Usage: "largest message in bytes"},
			&cli.Float64Flag{Name: "rate", Value: 50, Usage: "messages per second per connection (bursts of twice that)"},
			&cli.Float64Flag{Name: "register-rate", Value: 5, Usage: "new connections per second from one IP address (bursts of ten times that; behind a local reverse proxy, by X-Forwarded-For)"},
			&cli.DurationFlag{Name: "idle-timeout", Value: time.Minute, Usage: "close connections that answer no keepalive for this long"},
			&cli.StringFlag{Name: "turn", Usage: "address for built-in STUN/TURN, e.g. :3478 (UDP and TCP; STUN also on the next port) (default: off)"},
			&cli.StringFlag{Name: "public-ip", Usage: "the IP peers reach this server at, for --turn (default: the IP in --turn)"},
			&cli.StringFlag{Name: "turn-secret", Usage: "shared secret for TURN credentials (coturn use-auth-secret) (default: random)"},
			&cli.StringSliceFlag{Name: "ice-server", Usage: "also hand peers this STUN/TURN URL, e.g. turn:turn.example.org:3478 (repeatable)"},
			&cli.Float64Flag{Name: "relay-rate", Value: 4, Usage: "relay bandwidth per allocation and direction, in MB/s"},
			&cli.DurationFlag{Name: "relay-lifetime", Value: 24 * time.Hour, Usage: "longest a relay allocation may live"},
		},
		Action: runSignal,
	}
}

func runSignal(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// The heap is almost all long-lived per-client state: collecting
		// at 30% growth instead of 100% keeps 10,000 clients near 250 MB
		// instead of 270 MB, for a little CPU (measured with bench/load).
		debug.SetGCPercent(30)
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	secret := []byte(c.String("turn-secret"))
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	var servers []signal.ICEServer
	var relayStats *signal.RelayStats
	for _, u := range c.StringSlice("ice-server") {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return withHint(fmt.Errorf("--ice-server %q is not a stun:, turn: or turns: URL", u), "e.g. --ice-server turn:turn.example.org:3478")
		}
		servers = append(servers, signal.ICEServer{URLs: []string{u}})
	}
	if addr := c.String("turn"); addr != "" {
		relayStats = &signal.RelayStats{}
		urls, err := startTURN(ctx, e, &wg, addr, c.String("public-ip"), secret, c.Float64("relay-rate"), c.Duration("relay-lifetime"), relayStats)
		if err != nil {
			return err
		}
		servers = append(servers, urls...)
	}
	cfg := signal.ServerConfig{
		ICEServers:      iceServersFor(servers, secret),
		MaxConns:        c.Int("max-conns"),
		MaxMessageBytes: int64(c.Int("max-message")),
		Rate:            c.Float64("rate"),
		Burst:           int(2 * c.Float64("rate")),
		RegisterRate:    c.Float64("register-rate"),
		RegisterBurst:   int(10 * c.Float64("register-rate")),
		IdleTimeout:     c.Duration("idle-timeout"),
		RelayStats:      relayStats,
	}
	tlsConfig, err := signalTLS(e, c)
	if err != nil {
		return err
	}
	cfg.Logger = e.log.With("part", "signal-server")
	var bus *signal.RedisBus
	if url := c.String("redis"); url != "" {
		if bus, err = signal.NewRedisBus(ctx, url, e.log.With("part", "redis")); err != nil {
			return withHint(err, "is Redis running there? check --redis redis://HOST:PORT/DB")
		}
		cfg.Bus = bus
	}
	srv := signal.NewServer(cfg)
	if bus != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bus.Run(ctx, srv.Deliver)
		}()
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return withHint(fmt.Errorf("listen on %s: %w", c.String("listen"), err), "choose another address with --listen HOST:PORT")
	}
	scheme := "ws"
	if tlsConfig != nil {
		scheme = "wss"
	}
	fmt.Fprintf(e.stderr, "signaling server on %s://%s (peers use KIN_SIGNAL=%s://THIS-HOST:%d); Ctrl-C stops it\n", scheme, ln.Addr(), scheme, ln.Addr().(*net.TCPAddr).Port)
	return runSignalServer(ctx, ln, srv, tlsConfig)
}

// signalTLS is the TLS set-up the flags ask for, or nil for plain ws://.
func signalTLS(e *env, c *cli.Context) (*tls.Config, error) {
	cert, key, domain := c.String("tls-cert"), c.String("tls-key"), c.String("acme")
	switch {
	case domain != "" && (cert != "" || key != ""):
		return nil, withHint(errors.New("--acme and --tls-cert are two ways to get a certificate"), "use one of them")
	case domain != "":
		dir := c.String("acme-cache")
		if dir == "" {
			dir = filepath.Join(e.home, "acme")
		}
		m := &autocert.Manager{Prompt: autocert.AcceptTOS, HostPolicy: autocert.HostWhitelist(domain), Cache: autocert.DirCache(dir)}
		return m.TLSConfig(), nil
	case cert != "" || key != "":
		if cert == "" || key == "" {
			return nil, withHint(errors.New("--tls-cert and --tls-key go together"), "give both, e.g. --tls-cert fullchain.pem --tls-key privkey.pem")
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, withHint(fmt.Errorf("load the TLS certificate: %w", err), "both files must be PEM, the key matching the certificate")
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
	}
	return nil, nil
}

// iceServersFor hands each registering peer the servers, with fresh TURN
// credentials of its own for the TURN ones.
func iceServersFor(servers []signal.ICEServer, secret []byte) func(keys.PeerID) []signal.ICEServer {
	if len(servers) == 0 {
		return nil
	}
	return func(id keys.PeerID) []signal.ICEServer {
		out := make([]signal.ICEServer, len(servers))
		user, pass := signal.TURNCredentials(secret, id, time.Now(), turnCredentialTTL)
		for i, s := range servers {
			out[i] = s
			if strings.HasPrefix(s.URLs[0], "turn") {
				out[i].Username, out[i].Credential = user, pass
			}
		}
		return out
	}
}

// startTURN serves STUN+TURN on UDP and TURN on TCP at addr, STUN alone on
// the next UDP port, and returns the URLs peers should use.
func startTURN(ctx context.Context, e *env, wg *sync.WaitGroup, addr, publicIP string, secret []byte, mbps float64, lifetime time.Duration, stats *signal.RelayStats) ([]signal.ICEServer, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("--turn %q: %w", addr, err), "give an address like :3478 or 198.51.100.7:3478")
	}
	port, _ := strconv.Atoi(portStr)
	if publicIP == "" {
		publicIP = host
	}
	ip := net.ParseIP(publicIP)
	if ip == nil || ip.IsUnspecified() {
		return nil, withHint(fmt.Errorf("--turn needs the address peers reach this server at"), "add --public-ip YOUR-PUBLIC-IP")
	}
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("listen for STUN/TURN on UDP %s: %w", addr, err), "choose another port with --turn")
	}
	alt, err := net.ListenPacket("udp4", net.JoinHostPort(host, strconv.Itoa(port+1)))
	if err != nil {
		pc.Close()
		return nil, withHint(fmt.Errorf("listen for STUN on UDP port %d: %w", port+1, err), "--turn needs its port and the next one free")
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		pc.Close()
		alt.Close()
		return nil, withHint(fmt.Errorf("listen for TURN on TCP %s: %w", addr, err), "choose another port with --turn")
	}
	log := e.log.With("part", "turn")
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := signal.ServeTURN(ctx, signal.TURNConfig{
			PacketConn: pc, Listener: ln, RelayIP: ip, Secret: secret,
			BytesPerSecond: int(mbps * 1e6), MaxLifetime: lifetime, Stats: stats, Logger: log,
		})
		if err != nil && ctx.Err() == nil {
			log.Error("STUN/TURN stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := signal.ServeSTUN(ctx, alt, pc); err != nil && ctx.Err() == nil {
			log.Error("STUN stopped", "err", err)
		}
	}()
	hp := net.JoinHostPort(publicIP, portStr)
	fmt.Fprintf(e.stderr, "STUN and TURN on %s (UDP, TCP), STUN on UDP port %d\n", hp, port+1)
	return []signal.ICEServer{
		{URLs: []string{"stun:" + hp}},
		{URLs: []string{"stun:" + net.JoinHostPort(publicIP, strconv.Itoa(port+1))}},
		{URLs: []string{"turn:" + hp + "?transport=udp"}},
		{URLs: []string{"turn:" + hp + "?transport=tcp"}},
	}, nil
}
