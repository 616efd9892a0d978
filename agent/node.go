package agent

import (
	"context"
	"net"
	"time"

	"kin/keys"
	"kin/transport"
)

// dialTimeout bounds a Dial for a command: the offer, ICE and DTLS (and
// for a Link, the SSH handshake too).
const dialTimeout = 30 * time.Second

// NodeHandler is the Handler of an agent (kin up) whose peer connections
// go through a transport node.
type NodeHandler struct {
	Node   *transport.Node // set before the agent serves commands
	Reply  Reply           // what Hello says: ID, Signal, Instance, Inbox
	Shares Shares          // the tickets kin share commands asked for
}

// Hello says who the agent is.
func (h *NodeHandler) Hello() Reply { return h.Reply }

// Dial connects to a registration of peer ("" = its listener) through
// the node.
func (h *NodeHandler) Dial(ctx context.Context, peer keys.PeerID, instance string) (net.Conn, transport.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := h.Node.DialInstance(ctx, peer, instance)
	if err != nil {
		return nil, transport.Info{}, err
	}
	return c, c.Info(), nil
}

// Share serves port to holders of secret until stop is called.
func (h *NodeHandler) Share(port int, udp bool, secret []byte) (stop func(), err error) {
	return h.Shares.Add(port, udp, secret), nil
}
