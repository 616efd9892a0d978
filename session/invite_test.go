package session

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"kin/keys"
)

// inviteBook is an inviter's invites file and friends file, with one
// pending invite for "dad" allowed a shell; joined hears of each join.
func inviteBook(t *testing.T, life time.Duration) (store keys.Invites, friendsPath string, tk keys.Ticket, iv keys.Invite, joined chan keys.Friend) {
	dir := t.TempDir()
	store = keys.Invites{Path: filepath.Join(dir, "invites")}
	friendsPath = filepath.Join(dir, "friends")
	tk, iv, err := keys.NewInvite(ident(t), "mom", "dad", keys.Permissions{Shell: true}, "ws://signal", life, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(iv); err != nil {
		t.Fatal(err)
	}
	return store, friendsPath, tk, iv, make(chan keys.Friend, 1)
}

// A joiner who proves its key over SSH becomes a friend in the inviter's
// friends file, and AwaitInvite hands the inviter that friend.
func TestInviteBookBefriendsTheJoiner(t *testing.T) {
	store, friendsPath, tk, iv, joined := inviteBook(t, time.Hour)
	e := newEnv(t, ServerConfig{Invites: InviteBook(store, friendsPath, slog.New(slog.DiscardHandler), func(used keys.Invite, fr keys.Friend) {
		if used.ID == iv.ID {
			joined <- fr
		}
	})})
	dad := ident(t)
	c, err := e.dial(dad, tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Join(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if j.Name != "dad" || !j.Perms.Shell {
		t.Fatalf("joined as %+v", j)
	}
	fr, err := AwaitInvite(e.ctx, store, iv, joined)
	if err != nil {
		t.Fatal(err)
	}
	friends, _, err := keys.ReadFriends(friendsPath)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := friends.ByKey(dad.Public()); !ok || got.Name != "dad" || !got.Perms.Shell || fr.Name != "dad" {
		t.Fatalf("friends file has %+v (%v), AwaitInvite gave %+v", got, ok, fr)
	}
	// Used once: a second joiner hears why not.
	c2, err := e.dial(ident(t), tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Join(context.Background()); !errors.Is(err, keys.ErrInviteUsed) {
		t.Fatalf("second join: %v, want ErrInviteUsed", err)
	}
}

// An invite settled elsewhere ends the wait with the reason.
func TestAwaitInviteSaysWhyItEnded(t *testing.T) {
	ctx := context.Background()
	store, _, _, iv, joined := inviteBook(t, time.Hour)
	if _, err := store.Revoke(iv.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := AwaitInvite(ctx, store, iv, joined); !errors.Is(err, keys.ErrInviteRevoked) {
		t.Errorf("revoked: %v", err)
	}

	store, _, _, iv, joined = inviteBook(t, time.Second)
	if _, err := AwaitInvite(ctx, store, iv, joined); !errors.Is(err, keys.ErrInviteExpired) {
		t.Errorf("expired: %v", err)
	}

	store, _, _, iv, joined = inviteBook(t, time.Hour)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := AwaitInvite(cctx, store, iv, joined); !errors.Is(err, context.Canceled) {
		t.Errorf("after ctx: %v", err)
	}
}
