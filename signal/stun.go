package signal

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/pion/turn/v2"
)

// ServeSTUN answers STUN binding requests on conn until ctx is done, so
// peers behind NATs learn their public address. It allocates no relays:
// the TURN credentials hook (ServerConfig.ICEServers) is where TURN joins.
func ServeSTUN(ctx context.Context, conn net.PacketConn, logger *slog.Logger) error {
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: "kin",
		// No TURN yet: every allocation is refused; binding requests need no auth.
		AuthHandler: func(string, string, net.Addr) ([]byte, bool) { return nil, false },
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorNone{
				Address: "127.0.0.1",
			},
		}},
	})
	if err != nil {
		return fmt.Errorf("start STUN: %w", err)
	}
	if logger != nil {
		logger.Debug("STUN serving", "addr", conn.LocalAddr())
	}
	<-ctx.Done()
	return srv.Close()
}
