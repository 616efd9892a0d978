package signal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"kin/keys"
)

// AskOnline registers a throw-away key with the signaling server at url
// (so that it takes no offers meant for anyone) and asks which of peers
// are online. It returns the registration (its ICE servers, for checking
// the network), zero when the server could not be reached or refused it,
// and the answer; the connection is closed when it returns.
func AskOnline(ctx context.Context, url string, log *slog.Logger, peers ...keys.PeerID) (Registration, map[keys.PeerID]bool, error) {
	probe, err := keys.NewIdentity()
	if err != nil {
		return Registration{}, nil, err
	}
	client := NewClient(ClientConfig{URL: url, Signer: probe.Signer, Logger: log})
	var g errgroup.Group
	ctx, cancel := context.WithCancel(ctx)
	defer g.Wait()
	defer cancel()
	g.Go(func() error { return client.Run(ctx) })
	reg, err := client.Ready(ctx)
	if err != nil {
		if !errors.Is(err, ErrUnreachable) { // that one names the server already
			err = fmt.Errorf("signaling server %s: %w", url, err)
		}
		return Registration{}, nil, err
	}
	online, err := client.Online(ctx, peers...)
	if err != nil {
		return reg, nil, fmt.Errorf("ask the signaling server who is online: %w", err)
	}
	if online == nil {
		online = map[keys.PeerID]bool{}
	}
	return reg, online, nil
}
