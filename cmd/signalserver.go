package cmd

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/signal"
)

func signalCommand() *cli.Command {
	return &cli.Command{
		Name:  "signal",
		Usage: "run a signaling server, where peers find each other",
		Description: `The signaling server only introduces peers: it routes WebRTC offers and
answers by peer ID and sees public keys, never data. It cannot impersonate
anyone, because peers check each other's SSH keys end to end.
    kin signal --listen :7000
    KIN_SIGNAL=ws://this-host:7000 kin share 3000
With --stun it also answers STUN on a UDP port, so peers behind NATs learn
their public address; --stun-url is what it tells peers to use.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":7000", Usage: "TCP address for the WebSocket endpoint"},
			&cli.StringFlag{Name: "stun", Usage: "UDP address to answer STUN on, e.g. :3478 (default: off)"},
			&cli.StringFlag{Name: "stun-url", Usage: "STUN URL handed to peers, e.g. stun:signal.example.org:3478 (needed with --stun)"},
		},
		Action: runSignal,
	}
}

func runSignal(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var cfg signal.ServerConfig
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if addr := c.String("stun"); addr != "" {
		url := c.String("stun-url")
		if url == "" {
			return withHint(fmt.Errorf("--stun needs --stun-url"), "tell peers the public address: --stun-url stun:YOUR-HOST:PORT")
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("listen for STUN on %s: %w", addr, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := signal.ServeSTUN(ctx, pc, e.log.With("part", "stun")); err != nil && ctx.Err() == nil {
				e.log.Error("STUN stopped", "err", err)
			}
		}()
		servers := []signal.ICEServer{{URLs: []string{url}}}
		cfg.ICEServers = func(keys.PeerID) []signal.ICEServer { return servers }
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return withHint(fmt.Errorf("listen on %s: %w", c.String("listen"), err), "choose another address with --listen HOST:PORT")
	}
	fmt.Fprintf(e.stderr, "signaling server on ws://%s (peers use KIN_SIGNAL=ws://THIS-HOST:%d); Ctrl-C stops it\n", ln.Addr(), ln.Addr().(*net.TCPAddr).Port)
	return serveSignal(ctx, e, ln, cfg)
}
