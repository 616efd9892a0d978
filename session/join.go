package session

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// Pairing by invite (kin invite / kin join). The joiner authenticates with
// the invite's secret, as a ticket holder does, which lets it in for one
// thing only: a join request. In it the joiner proves its own key by
// signing this connection's session ID; only then does the server redeem
// the invite for that key.
const joinRequest = "kin-join@kin"

// joinDomain separates join signatures from every other use of the key.
const joinDomain = "kin join v1"

// Joined is what a redeemed invite did on the inviter's side.
type Joined struct {
	Name  string           // what the inviter calls the joiner now
	Perms keys.Permissions // what the joiner may do there
}

// Redeem uses an invite for the joiner's (proven) key. Its errors may
// wrap keys.ErrInviteUsed, ErrInviteExpired or ErrInviteRevoked, which the
// joiner gets back as the same errors.
type Redeem func(joiner ssh.PublicKey) (Joined, error)

// ErrJoinRefused is a refused join for any other reason; the message says
// why.
var ErrJoinRefused = errors.New("join refused")

type joinMsg struct {
	Key []byte // the joiner's public key, wire form
	Sig []byte // its signature (wire form) over joinSigned
}

type joinReply struct {
	Code    string // "ok", "used", "expired", "revoked" or "refused"
	Message string
	Name    string
	Allow   string
}

// joinSigned is what the joiner signs: bound to this SSH connection.
func joinSigned(sessionID []byte) []byte {
	return ssh.Marshal(struct {
		Domain    string
		SessionID []byte
	}{joinDomain, sessionID})
}

var joinCodes = []struct {
	code string
	err  error
}{
	{"used", keys.ErrInviteUsed},
	{"expired", keys.ErrInviteExpired},
	{"revoked", keys.ErrInviteRevoked},
	{"unknown", keys.ErrInviteUnknown},
}

// join serves a join request on a connection authenticated by an invite.
func (s *Server) join(g *Grant, sessionID []byte, req *ssh.Request, log *slog.Logger) {
	reply := func(r joinReply) {
		if req.WantReply {
			req.Reply(true, ssh.Marshal(r))
		}
	}
	if g.redeem == nil {
		log.Warn("refused join", "why", "not connected with an invite")
		reply(joinReply{Code: "refused", Message: "this connection was not made with an invite"})
		return
	}
	var m joinMsg
	if err := ssh.Unmarshal(req.Payload, &m); err != nil {
		req.Reply(false, nil)
		return
	}
	key, err := ssh.ParsePublicKey(m.Key)
	var sig ssh.Signature
	if err == nil {
		err = ssh.Unmarshal(m.Sig, &sig)
	}
	if err == nil {
		err = key.Verify(joinSigned(sessionID), &sig)
	}
	if err != nil {
		log.Warn("refused join", "why", "the joiner did not prove its key", "err", err)
		reply(joinReply{Code: "refused", Message: "the joining key was not proven"})
		return
	}
	j, err := g.redeem(key)
	if err != nil {
		log.Warn("refused join", "key", ssh.FingerprintSHA256(key), "err", err)
		r := joinReply{Code: "refused", Message: err.Error()}
		for _, c := range joinCodes {
			if errors.Is(err, c.err) {
				r = joinReply{Code: c.code}
			}
		}
		reply(r)
		return
	}
	log.Info("joined by invite", "name", j.Name, "key", ssh.FingerprintSHA256(key), "allowed", j.Perms.String())
	reply(joinReply{Code: "ok", Name: j.Name, Allow: j.Perms.String()})
}

// Join redeems the invite this client connected with: it proves our key
// and asks the peer to record us as a friend. A used, expired or revoked
// invite gives keys.ErrInviteUsed, ErrInviteExpired or ErrInviteRevoked.
func (c *Client) Join(ctx context.Context) (Joined, error) {
	sig, err := c.id.Signer.Sign(rand.Reader, joinSigned(c.ssh.SessionID()))
	if err != nil {
		return Joined{}, fmt.Errorf("sign the join: %w", err)
	}
	payload := ssh.Marshal(joinMsg{Key: c.id.Public().Marshal(), Sig: ssh.Marshal(sig)})
	type result struct {
		ok   bool
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ok, data, err := c.ssh.SendRequest(joinRequest, true, payload)
		done <- result{ok, data, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		c.ssh.Close()
		return Joined{}, fmt.Errorf("join: %w", ctx.Err())
	}
	if res.err != nil {
		return Joined{}, fmt.Errorf("join: %w", res.err)
	}
	var r joinReply
	if !res.ok || ssh.Unmarshal(res.data, &r) != nil {
		return Joined{}, fmt.Errorf("%w: the peer does not understand invites (is its kin older?)", ErrJoinRefused)
	}
	for _, jc := range joinCodes {
		if r.Code == jc.code {
			return Joined{}, jc.err
		}
	}
	if r.Code != "ok" {
		return Joined{}, fmt.Errorf("%w: %s", ErrJoinRefused, r.Message)
	}
	j := Joined{Name: r.Name}
	if r.Allow != "nothing" {
		if err := j.Perms.ParsePermission(r.Allow); err != nil {
			return Joined{}, fmt.Errorf("join: the peer's answer: %w", err)
		}
	}
	return j, nil
}
