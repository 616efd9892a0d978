package cmd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"kin/keys"
	"kin/signal"
	"kin/transport/netcheck"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "is my agent up, which signaling server, which friends are online",
		Description: `Asks the signaling server (--signal / KIN_SIGNAL) who is online: your own
key (your "kin up" agent) and each friend. It registers with a throw-away
key, so it never takes connections meant for your agent.`,
		Action: status,
	}
}

func status(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	id, err := e.loadIdentity()
	if err != nil {
		return err
	}
	friends, err := e.loadFriends()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "you:       %s (%s)\n", id.ID(), e.home)
	if e.signal == "" {
		fmt.Fprintln(e.stdout, "signaling: none configured (kin share and kin send run their own; set KIN_SIGNAL for friends)")
		return nil
	}
	probe, err := keys.NewIdentity()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, signalTimeout)
	defer cancel()
	client := signal.NewClient(signal.ClientConfig{URL: e.signal, Signer: probe.Signer, Logger: e.log})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); client.Run(ctx) }()
	if _, err := client.Ready(ctx); err != nil {
		fmt.Fprintf(e.stdout, "signaling: %s: unreachable\n", e.signal)
		return withHint(fmt.Errorf("signaling server %s: %w", e.signal, err), "check the URL, and that the server runs")
	}
	ids := []keys.PeerID{id.ID()}
	for _, f := range friends.List() {
		ids = append(ids, f.ID())
	}
	online, err := client.Online(ctx, ids...)
	if err != nil {
		return fmt.Errorf("ask the signaling server who is online: %w", err)
	}
	fmt.Fprintf(e.stdout, "signaling: %s: reachable\n", e.signal)
	if nat, err := natKind(ctx, client.Registration().ICEServers); err == nil {
		fmt.Fprintf(e.stdout, "network:   NAT %s: %s (details: kin doctor)\n", nat, nat.Advice())
	}
	if online[id.ID()] {
		fmt.Fprintln(e.stdout, "agent:     up (your key is registered: kin up, or kin share/send, runs somewhere)")
	} else {
		fmt.Fprintln(e.stdout, "agent:     down (start it with kin up, or kin up --install)")
	}
	if len(friends.List()) == 0 {
		fmt.Fprintln(e.stdout, "friends:   none yet")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FRIEND\tONLINE\tTHEY MAY")
	for _, f := range friends.List() {
		state := "no"
		if online[f.ID()] {
			state = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, state, f.Perms)
	}
	return tw.Flush()
}

// natKind asks only the STUN servers among servers what NAT this machine
// is behind (kin doctor also tries the relays).
func natKind(ctx context.Context, servers []signal.ICEServer) (netcheck.NAT, error) {
	var stuns []signal.ICEServer
	for _, s := range servers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "stun:") {
				stuns = append(stuns, signal.ICEServer{URLs: []string{u}})
			}
		}
	}
	r, err := netcheck.Check(ctx, stuns)
	if err != nil {
		return "", err
	}
	return r.NAT, nil
}
