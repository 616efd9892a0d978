package transport

import (
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/webrtc/v3"

	"kin/pionlog"
)

// Tuning, measured on loopback (see docs/performance.md): the kernel's
// default UDP buffers overflow at data-channel speeds and every drop makes
// SCTP back off; a large SCTP receive window lets the sender keep going.
const (
	udpBufferBytes   = 8 << 20
	sctpReceiveBytes = 32 << 20
)

func newAPI(cfg Config, n transport.Net) *webrtc.API {
	var se webrtc.SettingEngine
	se.DetachDataChannels()
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // kin never sends multicast
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetSCTPMaxReceiveBufferSize(sctpReceiveBytes)
	// A peer's connectivity check often arrives before its trickled
	// candidate, so the pair is peer-reflexive; pion would wait a second
	// before using it (measured: half of loopback connects took 1.02 s).
	se.SetPrflxAcceptanceMinWait(0)
	// DTLS runs only to the address ICE has just verified (a STUN check
	// signed with the password from the signaling exchange), so the
	// HelloVerifyRequest cookie, which guards against spoofed sources, adds
	// nothing but a round trip to every connection.
	se.SetDTLSInsecureSkipHelloVerify(true)
	// Notice a vanished peer in seconds, not pion's default 25 s: ICE
	// says "disconnected" after iceDisconnectedAfter without a packet (a
	// keep-alive goes out every second), and an established Conn ends
	// iceLostGrace later unless packets come back (see Conn.iceDisconnected).
	// Disconnected plus failed is also how long connectivity checks may
	// take before a connection is made: 14 s, for slow relays.
	se.SetICETimeouts(iceDisconnectedAfter, 14*time.Second-iceDisconnectedAfter, time.Second)
	se.LoggerFactory = pionlog.Factory(cfg.Logger)
	if n != nil {
		se.SetNet(n)
	}
	if len(cfg.Interfaces) > 0 {
		names := slices.Clone(cfg.Interfaces)
		se.SetInterfaceFilter(func(name string) bool { return slices.Contains(names, name) })
		if includesLoopback(names) {
			se.SetIncludeLoopbackCandidate(true)
		}
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

func includesLoopback(names []string) bool {
	for _, n := range names {
		if ifc, err := net.InterfaceByName(n); err == nil && ifc.Flags&net.FlagLoopback != 0 {
			return true
		}
		if n == "lo" || n == "lo0" {
			return true
		}
	}
	return false
}

func newBufferedNet(log *slog.Logger) *bufferedNet {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil
	}
	return &bufferedNet{Net: n, log: log}
}

// bufferedNet gives every UDP socket ICE opens large kernel buffers.
type bufferedNet struct {
	*stdnet.Net
	log  *slog.Logger
	once sync.Once
}

func (n *bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		if uc, ok := c.(*net.UDPConn); ok {
			n.size(uc)
		}
	}
	return c, err
}

func (n *bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		if uc, ok := c.(*net.UDPConn); ok {
			n.size(uc)
		}
	}
	return c, err
}

// size sets the socket buffers, forcing past the sysctl cap when allowed
// (root), and warns once when the OS keeps them small.
func (n *bufferedNet) size(c *net.UDPConn) {
	c.SetReadBuffer(udpBufferBytes)
	c.SetWriteBuffer(udpBufferBytes)
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	got := 0
	raw.Control(func(fd uintptr) {
		forceBuffers(fd, udpBufferBytes)
		got, _ = syscall.GetsockoptInt(sysHandle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	if got > 0 && got < udpBufferBytes {
		n.once.Do(func() {
			n.log.Warn("the OS limits UDP receive buffers; transfers will be slower",
				"got_bytes", got, "want_bytes", udpBufferBytes,
				"fix", "sysctl -w net.core.rmem_max=16777216 net.core.wmem_max=16777216")
		})
	}
}
