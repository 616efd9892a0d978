package keys

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestInvite(t testing.TB, store Invites, name string, life time.Duration) (Ticket, Invite) {
	t.Helper()
	tk, iv, err := store.Issue(mustIdentity(t), "alice", name, Permissions{Shell: true}, "ws://127.0.0.1:7000", life, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tk, iv
}

// One pending invite per name: a second waits until the first is revoked.
func TestIssueRefusesASecondPendingInviteForAName(t *testing.T) {
	store := Invites{Path: filepath.Join(t.TempDir(), "invites")}
	_, iv := newTestInvite(t, store, "dad", time.Hour)
	if _, _, err := store.Issue(mustIdentity(t), "alice", "Dad", Permissions{}, "ws://127.0.0.1:7000", time.Hour, time.Now()); !errors.Is(err, ErrInvitePending) {
		t.Fatalf("second invite for dad: %v, want ErrInvitePending", err)
	}
	if _, err := store.Revoke(iv.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	newTestInvite(t, store, "dad", time.Hour)
}

func TestInviteRedeemedOnceAndStoredWithoutItsSecret(t *testing.T) {
	store := Invites{Path: filepath.Join(t.TempDir(), "home", "invites")}
	tk, iv := newTestInvite(t, store, "dad", time.Hour)
	data, err := os.ReadFile(store.Path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), hex.EncodeToString(tk.Secret)) {
		t.Fatal("the invites file holds the secret")
	}
	if st, _ := os.Stat(store.Path); st.Mode().Perm() != 0o600 {
		t.Fatalf("invites file mode %v", st.Mode().Perm())
	}
	if found, err := store.Find(tk.Secret); err != nil || found.ID != iv.ID {
		t.Fatalf("find: %+v %v", found, err)
	}
	if _, err := store.Find(NewSecret()); !errors.Is(err, ErrInviteUnknown) {
		t.Fatalf("find unknown: %v", err)
	}

	// Two joiners at once: exactly one gets it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wins, used int
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := store.Redeem(tk.Secret, "key", time.Now(), func(Invite) error { return nil })
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrInviteUsed):
				used++
			default:
				t.Errorf("redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || used != 7 {
		t.Fatalf("%d redeemed, %d told used", wins, used)
	}
	list, _ := store.List()
	if len(list) != 1 || list[0].State != InviteUsed || list[0].UsedBy != "key" {
		t.Fatalf("after use: %+v", list)
	}
}

func TestInviteFailedRecordLeavesItPending(t *testing.T) {
	store := Invites{Path: filepath.Join(t.TempDir(), "invites")}
	tk, _ := newTestInvite(t, store, "dad", time.Hour)
	boom := errors.New("name taken")
	if _, err := store.Redeem(tk.Secret, "key", time.Now(), func(Invite) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("redeem: %v", err)
	}
	if _, err := store.Redeem(tk.Secret, "key", time.Now(), func(Invite) error { return nil }); err != nil {
		t.Fatalf("redeem after a failed record: %v", err)
	}
}

func TestInviteExpiresAndRevokes(t *testing.T) {
	store := Invites{Path: filepath.Join(t.TempDir(), "invites")}
	tk, iv := newTestInvite(t, store, "dad", time.Hour)
	ok := func(Invite) error { return nil }
	if _, err := store.Redeem(tk.Secret, "k", iv.Expires, ok); !errors.Is(err, ErrInviteExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	if err := store.Add(iv); err == nil {
		t.Fatal("a second pending invite for dad was accepted")
	}
	revoked, err := store.Revoke("DAD", time.Now())
	if err != nil || len(revoked) != 1 || revoked[0].ID != iv.ID {
		t.Fatalf("revoke: %+v %v", revoked, err)
	}
	if _, err := store.Redeem(tk.Secret, "k", time.Now(), ok); !errors.Is(err, ErrInviteRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := store.Revoke(iv.ID, time.Now()); err == nil {
		t.Fatal("revoked twice")
	}
	tk2, iv2 := newTestInvite(t, store, "dad", time.Hour)
	if _, err := store.Revoke(iv2.ID, time.Now()); err != nil {
		t.Fatalf("revoke by id: %v", err)
	}
	if found, _ := store.Find(tk2.Secret); found.Status(time.Now()) != InviteRevoked {
		t.Fatalf("state %q", found.State)
	}
	if _, _, err := NewInvite(mustIdentity(t), "alice", "dad", Permissions{}, "ws://h:1", MaxInviteLifetime+time.Second, time.Now()); err == nil {
		t.Fatal("an invite longer than the maximum")
	}
}

func FuzzParseInvites(f *testing.F) {
	store := Invites{Path: filepath.Join(f.TempDir(), "invites")}
	newTestInvite(f, store, "dad", time.Hour)
	data, _ := os.ReadFile(store.Path)
	f.Add(data)
	f.Add([]byte(`{"version":1,"invites":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseInvites(data)
		if err != nil {
			return
		}
		again, err := ParseInvites(marshalInvites(list))
		if err != nil {
			t.Fatalf("reparse of accepted invites fails: %v", err)
		}
		if len(again) != len(list) {
			t.Fatal("invite count changed")
		}
	})
}

// Befriend adds the joiner with the invite's name and permissions and
// uses the invite, both or neither: an unreadable friends file or a name
// that is taken leaves the invite pending and the file as it was.
func TestBefriendAddsTheJoinerOrNothing(t *testing.T) {
	dir := t.TempDir()
	store := Invites{Path: filepath.Join(dir, "invites")}
	friendsPath := filepath.Join(dir, "friends")
	tk, iv := newTestInvite(t, store, "dad", time.Hour)
	joiner := mustIdentity(t).Public()

	if err := os.Mkdir(friendsPath, 0o700); err != nil { // not a file: cannot be read
		t.Fatal(err)
	}
	if _, _, err := store.Befriend(tk.Secret, joiner, friendsPath, time.Now()); !errors.Is(err, ErrFriendsFile) {
		t.Fatalf("befriend with an unreadable friends file: %v", err)
	}
	os.Remove(friendsPath)

	taken, _ := ParseFriends(nil)
	if err := taken.Add(Friend{Name: "dad", Key: mustIdentity(t).Public()}); err != nil {
		t.Fatal(err)
	}
	if err := taken.WriteFile(friendsPath); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Befriend(tk.Secret, joiner, friendsPath, time.Now()); err == nil || !strings.Contains(err.Error(), `friend named "dad"`) {
		t.Fatalf("befriend under a taken name: %v", err)
	}
	os.Remove(friendsPath)

	used, fr, err := store.Befriend(tk.Secret, joiner, friendsPath, time.Now())
	if err != nil {
		t.Fatalf("befriend: %v", err)
	}
	if used.ID != iv.ID || used.State != InviteUsed || fr.Name != "dad" || !fr.Perms.Shell {
		t.Fatalf("befriend gave %+v, %+v", used, fr)
	}
	got, _, err := ReadFriends(friendsPath)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := got.ByKey(joiner); !ok || f.Name != "dad" || !f.Perms.Shell {
		t.Fatalf("friends file after befriend: %+v %v", f, ok)
	}
	if _, _, err := store.Befriend(tk.Secret, mustIdentity(t).Public(), friendsPath, time.Now()); !errors.Is(err, ErrInviteUsed) {
		t.Fatalf("second befriend: %v", err)
	}
}

// Status follows an invite by ID; an ID nobody issued is unknown.
func TestInviteStatusByID(t *testing.T) {
	dir := t.TempDir()
	store := Invites{Path: filepath.Join(dir, "invites")}
	tk, iv := newTestInvite(t, store, "dad", time.Hour)
	if st, err := store.Status(iv.ID, time.Now()); err != nil || st != InvitePending {
		t.Fatalf("new invite: %q %v", st, err)
	}
	if _, _, err := store.Befriend(tk.Secret, mustIdentity(t).Public(), filepath.Join(dir, "friends"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, err := store.Status(iv.ID, time.Now()); err != nil || st != InviteUsed {
		t.Fatalf("used invite: %q %v", st, err)
	}
	if _, err := store.Status("nosuchid", time.Now()); !errors.Is(err, ErrInviteUnknown) {
		t.Fatalf("unknown ID: %v", err)
	}
}

// AddFriend adds one line and leaves the others, even one kin skips, as
// they were; a name that is taken is refused.
func TestAddFriendKeepsTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "friends")
	const broken = "this line is not a friend\n"
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	mom := Friend{Name: "mom", Key: mustIdentity(t).Public()}
	if err := AddFriend(path, mom); err != nil {
		t.Fatal(err)
	}
	if err := AddFriend(path, Friend{Name: "mom", Key: mustIdentity(t).Public()}); err == nil {
		t.Fatal("a second mom was added")
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), broken) {
		t.Fatalf("the skipped line is gone:\n%s", data)
	}
	got, _, err := ReadFriends(path)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := got.ByName("mom"); !ok || f.ID() != mom.ID() {
		t.Fatalf("mom not in the file:\n%s", data)
	}
}
