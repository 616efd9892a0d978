package session

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/keys"
)

// InviteBook lets joiners redeem the invites in store, as a
// ServerConfig.Invites: a joiner who proves its key becomes a friend in
// the friends file at friendsPath, under the invite's name and with its
// permissions (keys.Invites.Befriend), and joined hears of it. Trouble
// with the inviter's own files is logged; the joiner hears only
// keys.ErrFriendsFile.
func InviteBook(store keys.Invites, friendsPath string, log *slog.Logger, joined func(keys.Invite, keys.Friend)) func(secret []byte) (Redeem, bool) {
	return func(secret []byte) (Redeem, bool) {
		if _, err := store.Find(secret); err != nil {
			if !errors.Is(err, keys.ErrInviteUnknown) {
				log.Warn("cannot read the invites file", "err", err)
			}
			return nil, false
		}
		return func(key ssh.PublicKey) (Joined, error) {
			iv, fr, err := store.Befriend(secret, key, friendsPath, time.Now())
			if errors.Is(err, keys.ErrFriendsFile) {
				log.Error("invite not used", "err", err)
				return Joined{}, keys.ErrFriendsFile // the details are not the joiner's
			}
			if err != nil {
				return Joined{}, err
			}
			joined(iv, fr)
			return Joined{Name: fr.Name, Perms: fr.Perms}, nil
		}, true
	}
}

// How often AwaitInvite looks at the invites file, and how long it waits
// for the news of a joiner once the file says the invite was used.
const (
	invitePoll      = time.Second
	inviteNewsDelay = 5 * time.Second
)

// AwaitInvite waits until the invite iv of store is settled, and returns
// the friend it made: the one joined delivers (fed by an InviteBook's
// joined for iv). It returns keys.ErrInviteExpired once iv expires,
// keys.ErrInviteRevoked when the file says it was revoked,
// keys.ErrInviteUsed when it was used by someone else's book (another
// process answering the same invites, such as kin up), or ctx's error.
func AwaitInvite(ctx context.Context, store keys.Invites, iv keys.Invite, joined <-chan keys.Friend) (keys.Friend, error) {
	expiry := time.NewTimer(time.Until(iv.Expires))
	defer expiry.Stop()
	poll := time.NewTicker(invitePoll)
	defer poll.Stop()
	for {
		select {
		case fr := <-joined:
			return fr, nil
		case <-expiry.C:
			return keys.Friend{}, keys.ErrInviteExpired
		case <-ctx.Done():
			return keys.Friend{}, ctx.Err()
		case <-poll.C:
			switch st, _ := store.Status(iv.ID, time.Now()); st {
			case keys.InviteRevoked:
				return keys.Friend{}, keys.ErrInviteRevoked
			case keys.InviteUsed:
				// Usually by our own joiner, whose news is on its way.
				select {
				case fr := <-joined:
					return fr, nil
				case <-time.After(inviteNewsDelay):
					return keys.Friend{}, keys.ErrInviteUsed
				case <-ctx.Done():
					return keys.Friend{}, ctx.Err()
				}
			}
		}
	}
}
