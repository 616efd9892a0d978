package keys

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Why an invite no longer works. They travel to the joiner (through SSH)
// so that it can say which.
var (
	ErrInviteUsed    = errors.New("this invite was already used")
	ErrInviteExpired = errors.New("this invite has expired")
	ErrInviteRevoked = errors.New("this invite was revoked")
	ErrInviteUnknown = errors.New("this invite is not known here")
)

// Invite states as stored; an expired invite is still "pending" on disk.
const (
	InvitePending = "pending"
	InviteUsed    = "used"
	InviteRevoked = "revoked"
	InviteExpired = "expired" // only from Invite.Status
)

// Invite is a pairing invite as its issuer keeps it: the SHA-256 of the
// secret, never the secret.
type Invite struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`  // what the joiner will be called
	Allow      string    `json:"allow"` // Permissions.String()
	Signal     string    `json:"signal"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	SecretHash string    `json:"secret_sha256"`
	State      string    `json:"state"`             // pending, used or revoked
	UsedBy     string    `json:"used_by,omitempty"` // the joiner's key, once used
	Closed     time.Time `json:"closed,omitzero"`   // when used or revoked
}

// Perms parses the permissions the invite grants.
func (iv Invite) Perms() (Permissions, error) {
	var p Permissions
	if iv.Allow == "nothing" || iv.Allow == "" {
		return p, nil
	}
	return p, p.ParsePermission(iv.Allow)
}

// Status is the invite's state at now: pending, used, revoked or expired.
func (iv Invite) Status(now time.Time) string {
	if iv.State == InvitePending && !now.Before(iv.Expires) {
		return InviteExpired
	}
	return iv.State
}

// Err says why the invite can no longer be used at now, nil if it can.
func (iv Invite) Err(now time.Time) error {
	switch iv.Status(now) {
	case InvitePending:
		return nil
	case InviteUsed:
		return ErrInviteUsed
	case InviteRevoked:
		return ErrInviteRevoked
	case InviteExpired:
		return ErrInviteExpired
	}
	return fmt.Errorf("invite %s has unknown state %q", iv.ID, iv.State)
}

func (iv Invite) validate() error {
	if iv.ID == "" || len(iv.ID) > 16 {
		return errors.New("bad id")
	}
	if err := ValidName(iv.Name); err != nil {
		return err
	}
	if _, err := iv.Perms(); err != nil {
		return err
	}
	if b, err := hex.DecodeString(iv.SecretHash); err != nil || len(b) != sha256.Size {
		return errors.New("bad secret_sha256")
	}
	switch iv.State {
	case InvitePending, InviteUsed, InviteRevoked:
	default:
		return fmt.Errorf("unknown state %q", iv.State)
	}
	return nil
}

func secretHash(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

var inviteIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewInvite makes an invite for a joiner to be called name, with perms,
// reached through signal, valid for life from now. It returns the ticket
// to give the joiner (issuer is our identity, issuerName the name we
// suggest the joiner calls us) and the record to keep.
func NewInvite(issuer *Identity, issuerName, name string, perms Permissions, signal string, life time.Duration, now time.Time) (Ticket, Invite, error) {
	if life <= 0 || life > MaxInviteLifetime {
		return Ticket{}, Invite{}, fmt.Errorf("an invite may last from 1 second to %d days", int(MaxInviteLifetime.Hours()/24))
	}
	secret := NewSecret()
	h := secretHash(secret)
	expires := now.Add(life).Truncate(time.Second)
	if !expires.After(now) {
		expires = expires.Add(time.Second)
	}
	t := Ticket{Kind: TicketInvite, Peer: issuer.Public(), Signal: signal, Name: issuerName,
		Secret: secret, Expires: expires, Invitee: name}
	if _, err := t.marshal(); err != nil {
		return Ticket{}, Invite{}, fmt.Errorf("make invite: %w", err)
	}
	iv := Invite{
		ID:         inviteIDEncoding.EncodeToString(h[:5]),
		Name:       name,
		Allow:      perms.String(),
		Signal:     signal,
		Created:    now.Truncate(time.Second),
		Expires:    expires,
		SecretHash: hex.EncodeToString(h),
		State:      InvitePending,
	}
	return t, iv, nil
}

// Invites is the issuer's invites file (KIN_HOME/invites): JSON, mode
// 0600, changed only under its lock file so that the agent, kin invite
// and kin invite --revoke can all change it.
type Invites struct {
	Path string
}

type invitesFile struct {
	Version int      `json:"version"`
	Invites []Invite `json:"invites"`
}

// ParseInvites decodes an invites file.
func ParseInvites(data []byte) ([]Invite, error) {
	var f invitesFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not an invites file: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("invites file version %d is not supported by this kin", f.Version)
	}
	ids := map[string]bool{}
	for i, iv := range f.Invites {
		if err := iv.validate(); err != nil {
			return nil, fmt.Errorf("invite %d: %w", i+1, err)
		}
		if ids[iv.ID] {
			return nil, fmt.Errorf("invite %d: id %s is used twice", i+1, iv.ID)
		}
		ids[iv.ID] = true
	}
	return f.Invites, nil
}

func marshalInvites(list []Invite) []byte {
	b, _ := json.MarshalIndent(invitesFile{Version: 1, Invites: list}, "", "  ")
	return append(b, '\n')
}

// List reads all invites; a missing file is none.
func (s Invites) List() ([]Invite, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read invites: %w", err)
	}
	list, err := ParseInvites(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path, err)
	}
	return list, nil
}

// keepClosed is how long used, revoked and expired invites stay listed.
const keepClosed = 7 * 24 * time.Hour

// Update changes the invites file under its lock: fn gets the current
// invites and returns the new list; old closed ones are dropped.
func (s Invites) Update(fn func([]Invite) ([]Invite, error)) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("create invites dir: %w", err)
	}
	l, err := LockFile(s.Path+".lock", true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	list, err := s.List()
	if err != nil {
		return err
	}
	list, err = fn(list)
	if err != nil {
		return err
	}
	now := time.Now()
	kept := list[:0]
	for _, iv := range list {
		end := iv.Expires
		if !iv.Closed.IsZero() {
			end = iv.Closed
		}
		if iv.Status(now) == InvitePending || now.Sub(end) < keepClosed {
			kept = append(kept, iv)
		}
	}
	if err := WriteFileAtomic(s.Path, marshalInvites(kept), 0o600); err != nil {
		return fmt.Errorf("write invites: %w", err)
	}
	return nil
}

// ErrInvitePending is why Add refuses an invite: one for the same name
// is pending.
var ErrInvitePending = errors.New("there is already a pending invite")

// Add stores a new invite. A pending invite for the same name must be
// revoked first, so that two joiners never compete for one name.
func (s Invites) Add(iv Invite) error {
	return s.Update(func(list []Invite) ([]Invite, error) {
		now := time.Now()
		for _, o := range list {
			if strings.EqualFold(o.Name, iv.Name) && o.Status(now) == InvitePending {
				return nil, fmt.Errorf("%w for %s (%s)", ErrInvitePending, o.Name, o.ID)
			}
		}
		return append(list, iv), nil
	})
}

// Issue makes an invite (NewInvite) and stores it (Add): it returns the
// ticket to give the joiner and the invite as stored.
func (s Invites) Issue(issuer *Identity, issuerName, name string, perms Permissions, signal string, life time.Duration, now time.Time) (Ticket, Invite, error) {
	tk, iv, err := NewInvite(issuer, issuerName, name, perms, signal, life, now)
	if err == nil {
		err = s.Add(iv)
	}
	return tk, iv, err
}

// Find returns the invite whose secret this is, in whatever state.
func (s Invites) Find(secret []byte) (Invite, error) {
	list, err := s.List()
	if err != nil {
		return Invite{}, err
	}
	if iv, ok := findSecret(list, secret); ok {
		return list[iv], nil
	}
	return Invite{}, ErrInviteUnknown
}

func findSecret(list []Invite, secret []byte) (int, bool) {
	if len(secret) != SecretSize {
		return 0, false
	}
	h := hex.EncodeToString(secretHash(secret))
	for i, iv := range list {
		if subtle.ConstantTimeCompare([]byte(iv.SecretHash), []byte(h)) == 1 {
			return i, true
		}
	}
	return 0, false
}

// Redeem uses the invite whose secret this is for joiner, once: if it is
// still pending at now, record (which adds the joiner to the friends
// file) runs under the invites lock, and only if it succeeds is the
// invite marked used. A used, expired or revoked invite gives
// ErrInviteUsed, ErrInviteExpired or ErrInviteRevoked.
func (s Invites) Redeem(secret []byte, joiner string, now time.Time, record func(Invite) error) (Invite, error) {
	var used Invite
	err := s.Update(func(list []Invite) ([]Invite, error) {
		i, ok := findSecret(list, secret)
		if !ok {
			return nil, ErrInviteUnknown
		}
		if err := list[i].Err(now); err != nil {
			return nil, err
		}
		if err := record(list[i]); err != nil {
			return nil, err
		}
		list[i].State = InviteUsed
		list[i].UsedBy = joiner
		list[i].Closed = now.Truncate(time.Second)
		used = list[i]
		return list, nil
	})
	return used, err
}

// Status is the state of the invite with this ID at now (see
// Invite.Status); ErrInviteUnknown when there is none.
func (s Invites) Status(id string, now time.Time) (string, error) {
	list, err := s.List()
	if err != nil {
		return "", err
	}
	for _, iv := range list {
		if iv.ID == id {
			return iv.Status(now), nil
		}
	}
	return "", ErrInviteUnknown
}

// AddFriend adds fr to the friends file at path, keeping the rest of the
// file as it is.
func AddFriend(path string, fr Friend) error {
	friends, _, err := ReadFriends(path)
	if err == nil {
		err = friends.Add(fr)
	}
	if err == nil {
		err = friends.WriteFile(path)
	}
	return err
}

// ErrFriendsFile says the inviter's friends file could not be read or
// written, so the invite stays unused. The error Befriend returns with it
// says what went wrong, for the inviter; the joiner needs only this.
var ErrFriendsFile = errors.New("the inviter's friends file could not be read or written")

// Befriend redeems the invite whose secret this is for joiner (see
// Redeem) and adds the joiner to the friends file at friendsPath, under
// the invite's name and with its permissions: both, or neither. A joiner
// who is a friend already, or a name that is taken, is refused.
func (s Invites) Befriend(secret []byte, joiner ssh.PublicKey, friendsPath string, now time.Time) (Invite, Friend, error) {
	var fr Friend
	iv, err := s.Redeem(secret, FormatKey(joiner), now, func(iv Invite) error {
		perms, err := iv.Perms()
		if err != nil {
			return err
		}
		friends, _, err := ReadFriends(friendsPath)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrFriendsFile, err)
		}
		if old, ok := friends.ByKey(joiner); ok {
			return fmt.Errorf("you are already a friend there, named %q", old.Name)
		}
		if _, ok := friends.ByName(iv.Name); ok {
			return fmt.Errorf("the inviter already has a friend named %q", iv.Name)
		}
		fr = Friend{Name: iv.Name, Key: joiner, Perms: perms}
		if err := friends.Add(fr); err != nil {
			return err
		}
		if err := friends.WriteFile(friendsPath); err != nil {
			return fmt.Errorf("%w: %w", ErrFriendsFile, err)
		}
		return nil
	})
	return iv, fr, err
}

// Revoke revokes the pending invites with this ID or name and returns
// them.
func (s Invites) Revoke(idOrName string, now time.Time) ([]Invite, error) {
	var revoked []Invite
	err := s.Update(func(list []Invite) ([]Invite, error) {
		for i, iv := range list {
			if (iv.ID == strings.ToLower(idOrName) || strings.EqualFold(iv.Name, idOrName)) && iv.Status(now) == InvitePending {
				list[i].State = InviteRevoked
				list[i].Closed = now.Truncate(time.Second)
				revoked = append(revoked, list[i])
			}
		}
		if len(revoked) == 0 {
			return nil, fmt.Errorf("no pending invite is named or numbered %q", idOrName)
		}
		return list, nil
	})
	return revoked, err
}
