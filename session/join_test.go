package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// invites is a server's invite book for tests: secret -> what redeeming it
// gives, and the keys it was redeemed for.
type invites struct {
	mu     sync.Mutex
	states map[string]error // nil = pending
	joined []ssh.PublicKey
}

func (iv *invites) hook(secret []byte) (Redeem, bool) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if _, ok := iv.states[string(secret)]; !ok {
		return nil, false
	}
	return func(key ssh.PublicKey) (Joined, error) {
		iv.mu.Lock()
		defer iv.mu.Unlock()
		if err := iv.states[string(secret)]; err != nil {
			return Joined{}, fmt.Errorf("invite: %w", err)
		}
		iv.states[string(secret)] = keys.ErrInviteUsed
		iv.joined = append(iv.joined, key)
		return Joined{Name: "dad", Perms: keys.Permissions{Shell: true, Ports: []int{22}}}, nil
	}, true
}

func TestJoinProvesTheJoinersKeyAndIsUsedOnce(t *testing.T) {
	secret := keys.NewSecret()
	book := &invites{states: map[string]error{string(secret): nil}}
	e := newEnv(t, ServerConfig{Invites: book.hook, Shell: nil})
	dad := ident(t)
	c, err := e.dial(dad, secret)
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Join(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if j.Name != "dad" || j.Perms.String() != "shell,port=22" {
		t.Fatalf("joined %+v", j)
	}
	if len(book.joined) != 1 || !bytes.Equal(book.joined[0].Marshal(), dad.Public().Marshal()) {
		t.Fatalf("redeemed for %v, want dad's key", book.joined)
	}
	// An invite connection grants nothing else.
	if _, err := c.NewSession(); !errors.Is(err, ErrShellNotAllowed) {
		t.Errorf("shell on an invite connection: %v", err)
	}
	if err := c.CheckPort(context.Background(), 22); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("port on an invite connection: %v", err)
	}
	// The same invite again: the reason comes back as a typed error.
	c2, err := e.dial(ident(t), secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Join(context.Background()); !errors.Is(err, keys.ErrInviteUsed) {
		t.Fatalf("second join: %v, want ErrInviteUsed", err)
	}
}

func TestJoinReasonsAreTypedErrors(t *testing.T) {
	for _, want := range []error{keys.ErrInviteExpired, keys.ErrInviteRevoked, keys.ErrInviteUsed} {
		secret := keys.NewSecret()
		book := &invites{states: map[string]error{string(secret): want}}
		e := newEnv(t, ServerConfig{Invites: book.hook})
		c, err := e.dial(ident(t), secret)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Join(context.Background()); !errors.Is(err, want) {
			t.Errorf("join: %v, want %v", err, want)
		}
		if len(book.joined) != 0 {
			t.Errorf("%v: redeemed anyway", want)
		}
	}
}

func TestJoinRefusesAnUnprovenKey(t *testing.T) {
	secret := keys.NewSecret()
	book := &invites{states: map[string]error{string(secret): nil}}
	e := newEnv(t, ServerConfig{Invites: book.hook})
	mallory, victim := ident(t), ident(t)
	c, err := e.dial(mallory, secret)
	if err != nil {
		t.Fatal(err)
	}
	send := func(key ssh.PublicKey, signer ssh.Signer, signed []byte) joinReply {
		t.Helper()
		sig, err := signer.Sign(rand.Reader, signed)
		if err != nil {
			t.Fatal(err)
		}
		ok, data, err := c.ssh.SendRequest(joinRequest, true, ssh.Marshal(joinMsg{Key: key.Marshal(), Sig: ssh.Marshal(sig)}))
		var r joinReply
		if err != nil || !ok || ssh.Unmarshal(data, &r) != nil {
			t.Fatalf("join request: %v %v", ok, err)
		}
		return r
	}
	// Claims the victim's key, signed with its own.
	if r := send(victim.Public(), mallory.Signer, joinSigned(c.ssh.SessionID())); r.Code != "refused" {
		t.Errorf("another's key: %+v", r)
	}
	// The victim's signature from another connection (replay).
	if r := send(victim.Public(), victim.Signer, joinSigned([]byte("another session id"))); r.Code != "refused" {
		t.Errorf("replayed signature: %+v", r)
	}
	if len(book.joined) != 0 {
		t.Fatalf("recorded an unproven key")
	}
	// Its own key, properly signed, works.
	if r := send(mallory.Public(), mallory.Signer, joinSigned(c.ssh.SessionID())); r.Code != "ok" {
		t.Errorf("proper join: %+v", r)
	}
}

func TestJoinNeedsAnInviteConnection(t *testing.T) {
	dad := ident(t)
	secret := keys.NewSecret()
	book := &invites{states: map[string]error{string(secret): nil}}
	e := newEnv(t, ServerConfig{
		Invites: book.hook,
		Friends: friends(t, keys.Friend{Name: "dad", Key: dad.Public()}),
		Tickets: func(s []byte) (keys.Permissions, bool) {
			return keys.Permissions{}, bytes.Equal(s, []byte("ticket-secret-16"))
		},
	})
	for name, sec := range map[string][]byte{"friend": nil, "ticket": []byte("ticket-secret-16")} {
		c, err := e.dial(dad, sec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Join(context.Background()); !errors.Is(err, ErrJoinRefused) {
			t.Errorf("%s connection joined: %v", name, err)
		}
	}
	// A secret that names no invite is refused at authentication.
	if _, err := e.dial(dad, keys.NewSecret()); !errors.Is(err, ErrAuthRefused) {
		t.Errorf("unknown invite: %v", err)
	}
	if len(book.joined) != 0 {
		t.Fatal("redeemed")
	}
}
