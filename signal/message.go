// Package signal is kin's rendezvous: a small WebSocket server that routes
// WebRTC offers, answers and ICE candidates between peers addressed by peer
// ID, and the client that registers with it by proving it holds its key.
// The server is untrusted: it never sees data, only metadata (public keys,
// who talks to whom, and the IP addresses in ICE candidates).
package signal

import (
	"kin/keys"
)

// Version is the protocol version carried in every message.
const Version = 1

// Message types. The server sends Challenge, Registered and Error (and
// answers Presence; keepalive is WebSocket ping frames, not a message);
// the client sends Register; the rest are routed between peers.
const (
	TypeChallenge  = "challenge"  // server -> client: Nonce to sign
	TypeRegister   = "register"   // client -> server: Key + Sig over the challenge
	TypeRegistered = "registered" // server -> client: From = your ID, ICEServers
	TypeOffer      = "offer"      // peer -> peer: SDP
	TypeAnswer     = "answer"     // peer -> peer: SDP
	TypeCandidate  = "candidate"  // peer -> peer: Candidate (JSON of webrtc.ICECandidateInit); empty = end of candidates
	TypeBye        = "bye"        // peer -> peer: session over
	TypeError      = "error"      // server -> client: Code, Reason; Session/To echo the message that failed
	TypePresence   = "presence"   // client -> server: is To online? server -> client: yes (From = To); no is an offline error
)

// Error codes in TypeError messages.
const (
	CodeOffline   = "offline" // the addressed peer is not registered
	CodeBadMsg    = "bad-message"
	CodeRateLimit = "rate-limit"
	CodeFull      = "server-full"
	CodeAuth      = "auth"
	CodeGoingAway = "going-away" // server shutting down; reconnect (elsewhere)
)

// Message is the one JSON object that travels over the signaling socket.
type Message struct {
	V          int         `json:"v"`
	Type       string      `json:"type"`
	From       keys.PeerID `json:"from,omitempty"` // set by the server on routed messages; never trusted from clients
	To         keys.PeerID `json:"to,omitempty"`
	Session    string      `json:"session,omitempty"` // random ID chosen by the dialer, ties offer/answer/candidates together
	SDP        string      `json:"sdp,omitempty"`
	Candidate  string      `json:"candidate,omitempty"`
	Nonce      []byte      `json:"nonce,omitempty"`
	Key        string      `json:"key,omitempty"` // authorized_keys form of the registering key
	Sig        []byte      `json:"sig,omitempty"` // ssh.Signature wire form
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
	Code       string      `json:"code,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	// Mode, in a register message, says which offers this registration
	// takes (ModeListen, ModeDial, ModeTicket).
	Mode string `json:"mode,omitempty"`
	// Instance, in a register message, names this registration (chosen
	// by the client, kept across reconnects); in an offer it names the
	// registration the offer is for (the one that issued a ticket).
	Instance string `json:"instance,omitempty"`
}

// Registration modes: which offers a registration takes. One identity may
// be registered several times at once (kin up and a kin send, two kin
// shares); the server routes so that none steals another's connections:
//   - every answer, candidate and bye of a session goes to the registration
//     that sent or took the session's offer;
//   - an offer naming an instance (from a ticket) goes to that
//     registration only;
//   - any other offer goes to the newest ModeListen registration.
const (
	ModeListen = ""       // takes offers (kin up, kin share, kin receive)
	ModeDial   = "dial"   // takes no offers: only dials (kin send to a friend, kin connect, kin shell)
	ModeTicket = "ticket" // takes only offers naming its instance (kin send with a ticket)
)

// MaxInstance is the longest instance name.
const MaxInstance = 32

// ICEServer is a STUN or TURN server the signaling server hands out,
// with credentials for TURN (coturn use-auth-secret style).
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}
