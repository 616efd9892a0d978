// Package agent is how kin commands reach the running agent (kin up) of
// their identity, so that one identity has one presence on the signaling
// server: while an agent runs, kin send, kin share, kin receive, kin
// connect, kin shell and kin pipe go through it instead of registering
// their key a second time (which would take connections meant for it).
//
// The agent listens on a unix socket, KIN_HOME/agent/control.sock, in a
// directory only its owner may enter (0700; the socket is 0600), and also
// checks the connecting process's user ID (SO_PEERCRED on Linux,
// LOCAL_PEERCRED on macOS): only its own user gets in. This is how
// tailscale's CLI talks to tailscaled.
//
// The protocol: the command sends one request, a JSON object on one line
// (at most MaxRequest bytes); the agent answers with one Reply line. Then:
//   - OpHello: done.
//   - OpDial: the agent has dialed the peer; from here on the control
//     connection carries that peer connection's bytes both ways. The
//     command runs its own SSH client over it, so it checks the peer's host
//     key itself; the agent never sees the SSH session's contents.
//   - OpShare: the agent serves the ticket (its secret grants the port)
//     until the command closes the control connection.
//   - OpLane, OpStream: on a peer connection a command dialed (named in
//     the dial's Reply), the agent opens (or, with Accept, takes the
//     next) extra lane or stream beside SSH's, and the control connection
//     carries its bytes: what lanes and streams are to a command that
//     dials alone (session.LaneConn), through the agent.
//
// The package also holds this machine's side of the kin network, which
// the agent and the commands share: a Peer is a transport node registered
// as one identity (with a built-in signaling server when none is set)
// that serves sessions; a Link dials peers through the agent or through a
// dial-only registration of its own, and keeps a forwarded port connected
// (Link.Forward); Up runs the agent itself.
package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"kin/keys"
	"kin/transport"
)

// Version is the control protocol's version, carried in every request.
const Version = 1

// MaxRequest bounds one request line, newline included.
const MaxRequest = 4096

// Operations.
const (
	OpHello  = "hello"  // who are you: identity, signaling server, inbox
	OpDial   = "dial"   // connect to Peer (at Instance) and splice
	OpShare  = "share"  // serve Port to holders of Secret while connected
	OpLane   = "lane"   // open (Accept: take) a lane of the dialed connection Conn and splice
	OpStream = "stream" // open (Accept: take) a stream beside SSH's on Conn and splice
)

// Request is what a command asks the agent.
type Request struct {
	V        int         `json:"v"`
	Op       string      `json:"op"`
	Peer     keys.PeerID `json:"peer,omitempty"`     // OpDial
	Instance string      `json:"instance,omitempty"` // OpDial: the peer's registration, from a ticket
	Port     int         `json:"port,omitempty"`     // OpShare
	UDP      bool        `json:"udp,omitempty"`      // OpShare: Port is a UDP port
	Secret   []byte      `json:"secret,omitempty"`   // OpShare: the ticket's secret
	Conn     string      `json:"conn,omitempty"`     // OpLane, OpStream: Reply.Dialed of a dial
	Accept   bool        `json:"accept,omitempty"`   // OpLane, OpStream: take the peer's next one
}

// Reply is the agent's answer.
type Reply struct {
	V     int    `json:"v"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"` // CodeOffline when the peer is not online

	// The agent's presence (every reply): a ticket it serves names its
	// signaling server and instance.
	ID       keys.PeerID `json:"id,omitempty"`
	Signal   string      `json:"signal,omitempty"`
	Instance string      `json:"instance,omitempty"`
	Inbox    string      `json:"inbox,omitempty"` // where friends' files land

	Conn *transport.Info `json:"conn,omitempty"` // OpDial: the peer connection
	// OpDial, on a connection with lanes and streams: its name for
	// OpLane and OpStream, and its transport.Conn.Binding.
	Dialed  string `json:"dialed,omitempty"`
	Binding []byte `json:"binding,omitempty"`
}

// CodeOffline says the peer is not online.
const CodeOffline = "offline"

// ParseRequest decodes and checks one request line (without its newline).
// It is the agent's only parser of what a command sends.
func ParseRequest(line []byte) (Request, error) {
	var r Request
	if len(line)+1 > MaxRequest {
		return r, errors.New("request too long")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("not a JSON request: %w", err)
	}
	if dec.More() {
		return r, errors.New("more than one JSON value on the line")
	}
	if r.V != Version {
		return r, fmt.Errorf("control protocol version %d not supported (want %d); is kin up the same version as this kin?", r.V, Version)
	}
	switch r.Op {
	case OpHello:
	case OpDial:
		if !r.Peer.Valid() {
			return r, fmt.Errorf("dial: bad peer ID %q", r.Peer)
		}
		if len(r.Instance) > keys.MaxInstance || strings.Trim(r.Instance, "0123456789abcdefghijklmnopqrstuvwxyz-") != "" {
			return r, errors.New("dial: bad instance")
		}
	case OpLane, OpStream:
		if len(r.Conn) != 2*dialedSize || strings.Trim(r.Conn, "0123456789abcdef") != "" {
			return r, fmt.Errorf("%s: bad connection name", r.Op)
		}
	case OpShare:
		if r.Port < 1 || r.Port > 65535 {
			return r, fmt.Errorf("share: port %d out of range", r.Port)
		}
		if len(r.Secret) != keys.SecretSize {
			return r, errors.New("share: the secret must be a ticket secret")
		}
	default:
		return r, fmt.Errorf("unknown operation %q", r.Op)
	}
	return r, nil
}
