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
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v2"
	"golang.org/x/time/rate"

	"kin/keys"
	"kin/pionlog"
)

// TURNConfig sets up the relay kin's signaling server embeds. Peers get
// short-lived credentials in coturn's use-auth-secret scheme (see
// TURNCredentials) when they register, so any key that registers can
// allocate (a key made a second ago is enough), and the same secret works
// with an external coturn. What a relay can reach is therefore what anyone
// can reach: public peer addresses only (see RelayAllow), never the
// server's own network.
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
	// RelayAllow lists peer ranges a relay may also talk to. By default it
	// refuses loopback, private (RFC 1918, RFC 4193), carrier-grade NAT,
	// link-local, multicast, unspecified and reserved addresses, and the
	// server's own addresses except relay ports (coturn's denied-peer-ip,
	// no-loopback-peers and no-multicast-peers). Allowing a range that
	// holds one of the server's addresses opens its UDP services on it.
	RelayAllow []netip.Prefix
	// Stats, if set, counts allocations and relayed bytes.
	Stats  *RelayStats
	Logger *slog.Logger
}

// RelayStats counts what the relay did.
type RelayStats struct {
	Allocations  atomic.Int64 // allocations made
	RelayedBytes atomic.Int64 // bytes relayed, both directions
	Dropped      atomic.Int64 // packets dropped by the bandwidth cap
	RefusedPeers atomic.Int64 // permissions and packets refused: peer address not allowed
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
	own := ownAddrs()
	if ip, err := netip.ParseAddr(listenIP(cfg.PacketConn)); err == nil && !ip.IsUnspecified() {
		own = append(own, ip)
	}
	policy := newPeerPolicy(cfg.RelayIP, cfg.RelayAllow, own)
	gen := &relayGenerator{
		static: turn.RelayAddressGeneratorStatic{RelayAddress: cfg.RelayIP, Address: listenIP(cfg.PacketConn)},
		cfg:    &cfg,
		policy: policy,
		log:    log,
	}
	permit := func(client net.Addr, peer net.IP) bool {
		ip, _ := netip.AddrFromSlice(peer)
		if policy.permitIP(ip) {
			return true
		}
		cfg.Stats.RefusedPeers.Add(1)
		// Debug: ICE asks for every candidate of the other peer, and LAN
		// addresses among them are refused on every connection.
		log.Debug("TURN refused a peer address that is not public", "client", client, "peer", peer)
		return false
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
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: cfg.PacketConn, RelayAddressGenerator: gen, PermissionHandler: permit}},
	}
	if cfg.Listener != nil {
		sc.ListenerConfigs = []turn.ListenerConfig{{Listener: cfg.Listener, RelayAddressGenerator: gen, PermissionHandler: permit}}
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

// relayGenerator makes relay sockets that enforce the bandwidth cap, the
// lifetime and the peer policy, and count what they carry.
type relayGenerator struct {
	static turn.RelayAddressGeneratorStatic
	cfg    *TURNConfig
	policy *peerPolicy
	log    *slog.Logger
}

func (g *relayGenerator) Validate() error { return g.static.Validate() }

func (g *relayGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.static.AllocatePacketConn(network, port)
	if err != nil {
		return nil, nil, err
	}
	g.cfg.Stats.Allocations.Add(1)
	var relayPort uint16
	if a, ok := addr.(*net.UDPAddr); ok {
		relayPort = uint16(a.Port)
		g.policy.addPort(relayPort)
	}
	burst := max(g.cfg.BytesPerSecond/4, 64<<10)
	return &limitedRelay{
		PacketConn: pc,
		in:         rate.NewLimiter(rate.Limit(g.cfg.BytesPerSecond), burst),
		out:        rate.NewLimiter(rate.Limit(g.cfg.BytesPerSecond), burst),
		end:        time.Now().Add(g.cfg.MaxLifetime),
		stats:      g.cfg.Stats,
		policy:     g.policy,
		port:       relayPort,
		log:        g.log,
	}, addr, nil
}

func (g *relayGenerator) AllocateConn(network string, port int) (net.Conn, net.Addr, error) {
	return g.static.AllocateConn(network, port)
}

// errRelayExpired ends an allocation that outlived TURNConfig.MaxLifetime.
var errRelayExpired = errors.New("relay lifetime is over")

// limitedRelay is one allocation's relay socket. Packets over the
// bandwidth cap are dropped, as a congested link would (SCTP backs off);
// after the lifetime the socket fails and the allocation ends. Packets to
// or from a peer the policy refuses are dropped too: TURN permissions
// name only an IP address, and on the server's own address only relay
// ports may be reached.
type limitedRelay struct {
	net.PacketConn
	in, out *rate.Limiter
	end     time.Time
	stats   *RelayStats
	policy  *peerPolicy
	port    uint16
	log     *slog.Logger
	closed  atomic.Bool
}

func (r *limitedRelay) Close() error {
	if r.closed.CompareAndSwap(false, true) && r.port != 0 {
		r.policy.removePort(r.port)
	}
	return r.PacketConn.Close()
}

// refuse counts and logs a packet dropped by the peer policy.
func (r *limitedRelay) refuse(dir string, peer net.Addr) {
	if r.stats.RefusedPeers.Add(1)%1000 == 1 { // one line per thousand, not per packet
		r.log.Info("TURN dropped packets for a peer address that is not allowed", "direction", dir, "peer", peer, "relay", r.LocalAddr())
	}
}

func (r *limitedRelay) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := r.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		now := time.Now()
		if now.After(r.end) {
			r.Close()
			return 0, nil, errRelayExpired
		}
		if !r.policy.permitAddr(addr) {
			r.refuse("from", addr)
			continue
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
		r.Close()
		return 0, errRelayExpired
	}
	if !r.policy.permitAddr(addr) {
		r.refuse("to", addr)
		return len(p), nil
	}
	if !r.out.AllowN(now, len(p)) {
		r.stats.Dropped.Add(1)
		return len(p), nil
	}
	r.stats.RelayedBytes.Add(int64(len(p)))
	return r.PacketConn.WriteTo(p, addr)
}

// TURNCredentialTTL is how long the TURN credentials handed to a peer at
// registration stay valid.
const TURNCredentialTTL = 24 * time.Hour

// ICEServersFor is a ServerConfig.ICEServers that hands each registering
// peer servers, with fresh TURN credentials of its own (derived from
// secret) on the turn: and turns: ones. nil servers hand out none.
func ICEServersFor(servers []ICEServer, secret []byte) func(keys.PeerID) []ICEServer {
	if len(servers) == 0 {
		return nil
	}
	return func(id keys.PeerID) []ICEServer {
		out := make([]ICEServer, len(servers))
		user, pass := TURNCredentials(secret, id, time.Now(), TURNCredentialTTL)
		for i, s := range servers {
			out[i] = s
			if len(s.URLs) > 0 && strings.HasPrefix(s.URLs[0], "turn") {
				out[i].Username, out[i].Credential = user, pass
			}
		}
		return out
	}
}

// ErrNoRelayIP means ListenTURN was not told the address peers reach the
// relay at, and could not take it from the listening address.
var ErrNoRelayIP = errors.New("TURN needs the IP address peers reach this server at")

// TURN is the built-in STUN/TURN service, listening: STUN and TURN on UDP
// and TURN on TCP (for networks that block UDP) at one port, and STUN
// alone on the next UDP port, so a client can compare the two views of
// its NAT (kin doctor).
type TURN struct {
	cfg TURNConfig
	alt net.PacketConn
	hp  string // public host:port
	alp string // public host:port of the STUN-only socket
}

// ListenTURN opens the sockets for the service at addr (":3478",
// "198.51.100.7:3478"), IPv4. cfg.RelayIP defaults to addr's host and must
// not be unspecified (ErrNoRelayIP); cfg's sockets are opened here.
// Serve runs it; Close frees the sockets of one never served.
func ListenTURN(addr string, cfg TURNConfig) (*TURN, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("TURN address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port >= 65535 {
		return nil, fmt.Errorf("TURN address %q: port must be 0-65534 (the next one serves STUN)", addr)
	}
	if cfg.RelayIP == nil {
		cfg.RelayIP = net.ParseIP(host)
	}
	if cfg.RelayIP == nil || cfg.RelayIP.IsUnspecified() {
		return nil, ErrNoRelayIP
	}
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for STUN/TURN on UDP %s: %w", addr, err)
	}
	// With port 0 the system chose; the STUN-only socket is the next one.
	port = pc.LocalAddr().(*net.UDPAddr).Port
	alt, err := net.ListenPacket("udp4", net.JoinHostPort(host, strconv.Itoa(port+1)))
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("listen for STUN on UDP port %d: %w", port+1, err)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		pc.Close()
		alt.Close()
		return nil, fmt.Errorf("listen for TURN on TCP %s: %w", addr, err)
	}
	cfg.PacketConn, cfg.Listener = pc, ln
	ip := cfg.RelayIP.String()
	return &TURN{
		cfg: cfg,
		alt: alt,
		hp:  net.JoinHostPort(ip, strconv.Itoa(port)),
		alp: net.JoinHostPort(ip, strconv.Itoa(port+1)),
	}, nil
}

// Addr is the public host:port of the STUN/TURN port.
func (t *TURN) Addr() string { return t.hp }

// STUNAddr is the public host:port of the STUN-only port, the next one.
func (t *TURN) STUNAddr() string { return t.alp }

// ICEServers are the URLs peers use, without credentials: hand them out
// with ICEServersFor.
func (t *TURN) ICEServers() []ICEServer {
	return []ICEServer{
		{URLs: []string{"stun:" + t.hp}},
		{URLs: []string{"stun:" + t.alp}},
		{URLs: []string{"turn:" + t.hp + "?transport=udp"}},
		{URLs: []string{"turn:" + t.hp + "?transport=tcp"}},
	}
}

// Serve answers STUN and relays until ctx is done, or returns the first
// failure of either part (having stopped the other).
func (t *TURN) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- ServeTURN(ctx, t.cfg) }()
	go func() { errc <- ServeSTUN(ctx, t.alt, t.cfg.PacketConn) }()
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	t.Close()
	return err
}

// Close frees the sockets.
func (t *TURN) Close() error {
	t.cfg.PacketConn.Close()
	t.cfg.Listener.Close()
	return t.alt.Close()
}
