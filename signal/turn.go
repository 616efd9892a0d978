package signal

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v2"
	"golang.org/x/time/rate"

	"kin/internal/pionlog"
	"kin/keys"
)

// TURNConfig sets up the relay kin's signaling server embeds. Peers get
// short-lived credentials in coturn's use-auth-secret scheme (see
// TURNCredentials), so only peers that registered (proved their key) can
// allocate, and the same secret works with an external coturn.
type TURNConfig struct {
	// PacketConn answers STUN and TURN over UDP.
	PacketConn net.PacketConn
	// Listener, if set, serves TURN over TCP for networks that block UDP.
	Listener net.Listener
	// RelayIP is the address peers reach relays at (the server's public IP).
	RelayIP net.IP
	// Secret is the shared secret credentials are derived from.
	Secret []byte
	// BytesPerSecond caps each allocation in each direction; 0 means 4 MB/s.
	BytesPerSecond int
	// MaxLifetime ends an allocation this long after it was made, however
	// often it is refreshed; 0 means 24 hours.
	MaxLifetime time.Duration
	// Stats, if set, counts allocations and relayed bytes.
	Stats  *RelayStats
	Logger *slog.Logger
}

// RelayStats counts what the relay did.
type RelayStats struct {
	Allocations  atomic.Int64 // allocations made
	RelayedBytes atomic.Int64 // bytes relayed, both directions
	Dropped      atomic.Int64 // packets dropped by the bandwidth cap
}

// turnRealm is the realm in TURN's long-term credentials.
const turnRealm = "kin"

// TURNCredentials returns credentials for peer id valid until now+ttl, in
// coturn's use-auth-secret scheme: username "EXPIRY:ID", password
// base64(HMAC-SHA1(secret, username)).
func TURNCredentials(secret []byte, id keys.PeerID, now time.Time, ttl time.Duration) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + string(id)
	return username, turnPassword(secret, username)
}

func turnPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// checkTURNUser says whether username is a well-formed, unexpired
// use-auth-secret username.
func checkTURNUser(username string, now time.Time) error {
	exp, _, _ := strings.Cut(username, ":")
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return fmt.Errorf("TURN username %q has no expiry", username)
	}
	if now.Unix() > t {
		return errors.New("TURN credentials expired")
	}
	return nil
}

// ServeTURN answers STUN and relays for authenticated peers until ctx is
// done.
func ServeTURN(ctx context.Context, cfg TURNConfig) error {
	if cfg.BytesPerSecond <= 0 {
		cfg.BytesPerSecond = 4 << 20
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 24 * time.Hour
	}
	if cfg.Stats == nil {
		cfg.Stats = &RelayStats{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Secret) == 0 || cfg.RelayIP == nil {
		return errors.New("TURN needs a secret and a relay IP")
	}
	gen := &relayGenerator{
		static: turn.RelayAddressGeneratorStatic{RelayAddress: cfg.RelayIP, Address: listenIP(cfg.PacketConn)},
		cfg:    &cfg,
	}
	sc := turn.ServerConfig{
		Realm:         turnRealm,
		LoggerFactory: pionlog.Factory(log),
		AuthHandler: func(username, realm string, src net.Addr) ([]byte, bool) {
			if err := checkTURNUser(username, time.Now()); err != nil {
				log.Debug("TURN refused", "from", src, "err", err)
				return nil, false
			}
			return turn.GenerateAuthKey(username, realm, turnPassword(cfg.Secret, username)), true
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: cfg.PacketConn, RelayAddressGenerator: gen}},
	}
	if cfg.Listener != nil {
		sc.ListenerConfigs = []turn.ListenerConfig{{Listener: cfg.Listener, RelayAddressGenerator: gen}}
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return fmt.Errorf("start TURN: %w", err)
	}
	log.Debug("STUN/TURN serving", "udp", cfg.PacketConn.LocalAddr(), "relay_ip", cfg.RelayIP)
	<-ctx.Done()
	return srv.Close()
}

func listenIP(pc net.PacketConn) string {
	if a, ok := pc.LocalAddr().(*net.UDPAddr); ok && a.IP != nil && !a.IP.IsUnspecified() {
		return a.IP.String()
	}
	return "0.0.0.0"
}

// relayGenerator makes relay sockets that enforce the bandwidth cap and
// the lifetime, and count what they carry.
type relayGenerator struct {
	static turn.RelayAddressGeneratorStatic
	cfg    *TURNConfig
}

func (g *relayGenerator) Validate() error { return g.static.Validate() }

func (g *relayGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.static.AllocatePacketConn(network, port)
	if err != nil {
		return nil, nil, err
	}
	g.cfg.Stats.Allocations.Add(1)
	burst := max(g.cfg.BytesPerSecond/4, 64<<10)
	return &limitedRelay{
		PacketConn: pc,
		in:         rate.NewLimiter(rate.Limit(g.cfg.BytesPerSecond), burst),
		out:        rate.NewLimiter(rate.Limit(g.cfg.BytesPerSecond), burst),
		end:        time.Now().Add(g.cfg.MaxLifetime),
		stats:      g.cfg.Stats,
	}, addr, nil
}

func (g *relayGenerator) AllocateConn(network string, port int) (net.Conn, net.Addr, error) {
	return g.static.AllocateConn(network, port)
}

// errRelayExpired ends an allocation that outlived TURNConfig.MaxLifetime.
var errRelayExpired = errors.New("relay lifetime is over")

// limitedRelay is one allocation's relay socket. Packets over the
// bandwidth cap are dropped, as a congested link would (SCTP backs off);
// after the lifetime the socket fails and the allocation ends.
type limitedRelay struct {
	net.PacketConn
	in, out *rate.Limiter
	end     time.Time
	stats   *RelayStats
}

func (r *limitedRelay) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := r.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		now := time.Now()
		if now.After(r.end) {
			r.PacketConn.Close()
			return 0, nil, errRelayExpired
		}
		if !r.in.AllowN(now, n) {
			r.stats.Dropped.Add(1)
			continue
		}
		r.stats.RelayedBytes.Add(int64(n))
		return n, addr, nil
	}
}

func (r *limitedRelay) WriteTo(p []byte, addr net.Addr) (int, error) {
	now := time.Now()
	if now.After(r.end) {
		r.PacketConn.Close()
		return 0, errRelayExpired
	}
	if !r.out.AllowN(now, len(p)) {
		r.stats.Dropped.Add(1)
		return len(p), nil
	}
	r.stats.RelayedBytes.Add(int64(len(p)))
	return r.PacketConn.WriteTo(p, addr)
}
