package cmd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"kin/signal"
)

func signalCommand() *cli.Command {
	return &cli.Command{
		Name:  "signal",
		Usage: "run a signaling server, where peers find each other",
		Description: `The signaling server only introduces peers: it routes WebRTC offers and
answers by peer ID. It sees public keys, who talks to whom and when, and
the IP addresses in the peers' ICE candidates, never data. It cannot
impersonate anyone, because peers check each other's SSH keys end to end.
    kin signal --listen :7000
    KIN_SIGNAL=ws://this-host:7000 kin share 3000

Behind NATs peers need STUN (to learn their public address) and, when no
direct path exists, a TURN relay. --turn serves both, built in:
    kin signal --listen :7000 --turn :3478 --public-ip 198.51.100.7
answers STUN and TURN on UDP 3478, TURN on TCP 3478 (for networks that
block UDP) and STUN on UDP 3479 (kin doctor compares the two views). Every
key that registers gets TURN credentials valid for a day (a key made a
second ago is enough), so anyone who can reach this server can use the
relay. It relays only to public addresses: never to loopback, private
(10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT (100.64/10),
link-local, multicast or reserved ranges, nor to this server's own
addresses other than its relay ports; refusals are counted in /metrics.
--relay-allow CIDR (repeatable) opens a range, e.g. a LAN whose peers
should meet through the relay. To use coturn instead, give it the same
secret (use-auth-secret, static-auth-secret=...) and hand it out:
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
			&cli.StringSliceFlag{Name: "relay-allow", Usage: "let the relay also reach this range, e.g. 10.0.0.0/8 for a LAN (repeatable; default: public addresses only)"},
		},
		Action: signalAction,
	}
}

func signalAction(c *cli.Context) error {
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
	cfg := signal.ServiceConfig{
		Server: signal.ServerConfig{
			MaxConns:        c.Int("max-conns"),
			MaxMessageBytes: int64(c.Int("max-message")),
			Rate:            c.Float64("rate"),
			Burst:           int(2 * c.Float64("rate")),
			RegisterRate:    c.Float64("register-rate"),
			RegisterBurst:   int(10 * c.Float64("register-rate")),
			IdleTimeout:     c.Duration("idle-timeout"),
		},
		TURN:   c.String("turn"),
		Relay:  signal.TURNConfig{BytesPerSecond: int(c.Float64("relay-rate") * 1e6), MaxLifetime: c.Duration("relay-lifetime")},
		Secret: []byte(c.String("turn-secret")),
		Redis:  c.String("redis"),
		Logger: e.log,
	}
	for _, a := range c.StringSlice("relay-allow") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return withHint(fmt.Errorf("--relay-allow %q is not an address range: %w", a, err), "give it in CIDR form, e.g. --relay-allow 192.168.1.0/24")
		}
		cfg.Relay.RelayAllow = append(cfg.Relay.RelayAllow, p.Masked())
	}
	if len(cfg.Relay.RelayAllow) > 0 && cfg.TURN == "" {
		return withHint(errors.New("--relay-allow is for the built-in relay, which is off"), "add --turn :3478 (an external TURN server has its own settings, e.g. coturn's allowed-peer-ip)")
	}
	if ip := c.String("public-ip"); ip != "" {
		if cfg.Relay.RelayIP = net.ParseIP(ip); cfg.Relay.RelayIP == nil {
			return withHint(fmt.Errorf("--public-ip %q is not an IP address", ip), "e.g. --public-ip 198.51.100.7")
		}
	}
	for _, u := range c.StringSlice("ice-server") {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return withHint(fmt.Errorf("--ice-server %q is not a stun:, turn: or turns: URL", u), "e.g. --ice-server turn:turn.example.org:3478")
		}
		cfg.ICEServers = append(cfg.ICEServers, signal.ICEServer{URLs: []string{u}})
	}
	if cfg.Server.TLS, err = signalTLS(e, c); err != nil {
		return err
	}
	svc, err := signal.OpenService(c.Context, cfg)
	switch {
	case errors.Is(err, signal.ErrNoRelayIP):
		return withHint(err, "add --public-ip YOUR-PUBLIC-IP")
	case errors.Is(err, signal.ErrTURNListen):
		return withHint(err, "give --turn a free port, e.g. --turn :3478 (the next port is needed too, for STUN)")
	case errors.Is(err, signal.ErrRedis):
		return withHint(err, "is Redis running there? check --redis redis://HOST:PORT/DB")
	case err != nil:
		return err
	}
	if tn := svc.TURN; tn != nil {
		fmt.Fprintf(e.stderr, "STUN and TURN on %s (UDP, TCP), STUN alone on %s (UDP); the relay reaches public addresses", tn.Addr(), tn.STUNAddr())
		if len(cfg.Relay.RelayAllow) > 0 {
			fmt.Fprintf(e.stderr, " and %v", cfg.Relay.RelayAllow)
		}
		fmt.Fprintln(e.stderr)
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		svc.Close()
		return withHint(fmt.Errorf("listen on %s: %w", c.String("listen"), err), "choose another address with --listen HOST:PORT")
	}
	scheme := "ws"
	if cfg.Server.TLS != nil {
		scheme = "wss"
	}
	fmt.Fprintf(e.stderr, "signaling server on %s://%s (peers use KIN_SIGNAL=%s://THIS-HOST:%d); Ctrl-C stops it\n", scheme, ln.Addr(), scheme, ln.Addr().(*net.TCPAddr).Port)
	return svc.Serve(c.Context, ln)
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
		return signal.TLSACME(domain, dir), nil
	case cert != "" || key != "":
		if cert == "" || key == "" {
			return nil, withHint(errors.New("--tls-cert and --tls-key go together"), "give both, e.g. --tls-cert fullchain.pem --tls-key privkey.pem")
		}
		cfg, err := signal.TLSFiles(cert, key)
		return cfg, withHint(err, "both files must be PEM, the key matching the certificate")
	}
	return nil, nil
}
