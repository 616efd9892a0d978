package keys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityCreatedOnceAndReadableBySSHKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "id_ed25519")
	id, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("create: %v created=%v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	again, created, err := LoadOrCreateIdentity(path)
	if err != nil || created {
		t.Fatalf("reload: %v created=%v", err, created)
	}
	if again.ID() != id.ID() {
		t.Fatalf("ID changed across reload: %s vs %s", id.ID(), again.ID())
	}
	if !id.ID().Valid() {
		t.Fatalf("invalid ID %q", id.ID())
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen missing in CI")
		}
		t.Skip("ssh-keygen not installed")
	}
	out, err := exec.Command("ssh-keygen", "-y", "-f", path).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v", err)
	}
	if got := strings.Fields(string(out)); len(got) < 2 || got[0]+" "+got[1] != id.AuthorizedKey() {
		t.Fatalf("ssh-keygen sees %q, kin %q", out, id.AuthorizedKey())
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadIdentity(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file loaded")
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := LoadIdentity(bad); err == nil || !strings.Contains(err.Error(), "parse identity") {
		t.Fatalf("bad key: %v", err)
	}
	if _, _, err := LoadOrCreateIdentity(bad); err == nil {
		t.Fatal("LoadOrCreate replaced a corrupt key instead of failing")
	}
}

func mustIdentity(t testing.TB) *Identity {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testTicket(t testing.TB) Ticket {
	return Ticket{Kind: TicketPort, Port: 8000, Peer: mustIdentity(t).Public(),
		Signal: "ws://192.0.2.7:7000", Name: "alice", Secret: NewSecret()}
}

func TestTicketRoundTrip(t *testing.T) {
	tk := testTicket(t)
	s := tk.String()
	if !strings.HasPrefix(s, TicketPrefix) || strings.ContainsAny(s, " \n") {
		t.Fatalf("ticket %q", s)
	}
	for _, in := range []string{s, "  kin connect " + s + "\n", strings.ToUpper(s)} {
		got, err := ParseTicket(in)
		if err != nil {
			t.Fatalf("parse %q: %v", in, err)
		}
		if got.Port != 8000 || got.Signal != tk.Signal || got.Name != "alice" || !SecretEqual(got.Secret, tk.Secret) || IDOf(got.Peer) != IDOf(tk.Peer) {
			t.Fatalf("got %+v", got)
		}
	}
}

func TestTicketTyposAreClearErrors(t *testing.T) {
	s := testTicket(t).String()
	flip := []byte(s)
	if flip[20] == 'a' {
		flip[20] = 'b'
	} else {
		flip[20] = 'a'
	}
	cases := map[string]string{
		string(flip):          "checksum",
		s[:len(s)-5]:          "",
		s[:10]:                "",
		s + "1":               "", // 1 is not in the alphabet
		"kin2abcdef":          "not supported",
		"hello":               "not a kin ticket",
		s[:30] + "!" + s[31:]: "damaged",
	}
	for in, want := range cases {
		_, err := ParseTicket(in)
		if err == nil {
			t.Errorf("accepted %q", in)
			continue
		}
		if want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q lacks %q", in, err, want)
		}
	}
}

func TestTicketRejectsBadFields(t *testing.T) {
	for _, mod := range []func(*Ticket){
		func(t *Ticket) { t.Port = 0 },
		func(t *Ticket) { t.Kind = 9 },
		func(t *Ticket) { t.Signal = "http://x" },
		func(t *Ticket) { t.Secret = t.Secret[:3] },
		func(t *Ticket) { t.Name = "a\nb" },
	} {
		tk := testTicket(t)
		mod(&tk)
		if _, err := tk.marshal(); err == nil {
			t.Errorf("marshalled invalid ticket %+v", tk)
		}
	}
}

func testInvite(t testing.TB) Ticket {
	return Ticket{Kind: TicketInvite, Peer: mustIdentity(t).Public(), Signal: "wss://signal.example.org",
		Name: "alice", Secret: NewSecret(), Expires: time.Unix(1893456000, 0), Invitee: "dad"}
}

func TestInviteTicketRoundTrip(t *testing.T) {
	tk := testInvite(t)
	s := tk.String()
	got, err := ParseTicket("kin join " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != TicketInvite || !got.Expires.Equal(tk.Expires) || got.Invitee != "dad" || got.Name != "alice" ||
		!SecretEqual(got.Secret, tk.Secret) || IDOf(got.Peer) != IDOf(tk.Peer) || got.Signal != tk.Signal {
		t.Fatalf("got %+v", got)
	}
	// A port ticket is unchanged by the new kind (same bytes as before).
	pt := testTicket(t)
	if _, err := ParseTicket(pt.String()); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*Ticket){
		func(t *Ticket) { t.Expires = time.Time{} },
		func(t *Ticket) { t.Expires = t.Expires.Add(time.Millisecond) },
		func(t *Ticket) { t.Invitee = "" },
		func(t *Ticket) { t.Invitee = "bad name" },
		func(t *Ticket) { t.Port = 80 },
	} {
		bad := testInvite(t)
		mod(&bad)
		if _, err := bad.marshal(); err == nil {
			t.Errorf("marshalled invalid invite %+v", bad)
		}
	}
	pt.Invitee = "dad"
	if _, err := pt.marshal(); err == nil {
		t.Error("port ticket with an invitee")
	}
}

func FuzzParseTicket(f *testing.F) {
	f.Add(testTicket(f).String())
	f.Add(testInvite(f).String())
	f.Add(Ticket{Kind: TicketFiles, Peer: mustIdentity(f).Public(), Signal: "ws://h:1", Secret: NewSecret()}.String())
	f.Add(Ticket{Kind: TicketFiles, Peer: mustIdentity(f).Public(), Signal: "ws://h:1", Secret: NewSecret(), Instance: "ab12"}.String())
	udp := testTicket(f)
	udp.UDP = true
	f.Add(udp.String())
	f.Add(oldPortTicket)
	f.Add("kin1")
	f.Add("kin1aaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseTicket(s)
		if err != nil {
			return
		}
		again, err := ParseTicket(tk.String())
		if err != nil {
			t.Fatalf("reencode of accepted ticket fails: %v", err)
		}
		if again.String() != tk.String() || again.UDP != tk.UDP || again.Kind != tk.Kind || again.Port != tk.Port {
			t.Fatal("ticket does not round-trip")
		}
		if tk.UDP && tk.Kind != TicketPort {
			t.Fatalf("UDP on a ticket of kind %d", tk.Kind)
		}
	})
}

// oldPortTicket was written by kin before tickets carried the protocol:
// TCP port 30000 of alice (the ed25519 key of an all-zero seed).
const oldPortTicket = "kin1af2tamyaaaaaw43tnawwkzbsgu2tcoiaaaacao3ke66m5nvefvrkhkgqfjxq243fgikxohpciotdvqciugfvtwrjgaytemzugu3doobzmfrggzdfmyjxo4z2f4xtcmrxfyyc4mboge5dombqgacwc3djmns4xsboha"

func TestUDPTicket(t *testing.T) {
	// A ticket from before UDP still parses, as TCP, and is written
	// back to the very same text.
	old, err := ParseTicket(oldPortTicket)
	if err != nil {
		t.Fatal(err)
	}
	if old.Kind != TicketPort || old.UDP || old.Port != 30000 || old.Name != "alice" || old.Signal != "ws://127.0.0.1:7000" {
		t.Fatalf("old ticket = %+v", old)
	}
	if old.String() != oldPortTicket {
		t.Fatal("an old TCP ticket is written differently now")
	}
	// The same ticket for UDP says so, and differs from the TCP one.
	u := old
	u.UDP = true
	got, err := ParseTicket(u.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != TicketPort || !got.UDP || got.Port != 30000 {
		t.Fatalf("UDP ticket = %+v", got)
	}
	if u.String() == oldPortTicket {
		t.Fatal("UDP ticket encodes like the TCP one")
	}
	// Only port tickets carry UDP.
	for _, k := range []TicketKind{TicketFiles, TicketInvite} {
		bad := testInvite(t)
		bad.Kind, bad.UDP = k, true
		if k == TicketFiles {
			bad.Expires, bad.Invitee = time.Time{}, ""
		}
		if _, err := bad.marshal(); err == nil {
			t.Errorf("kind %d ticket with UDP marshalled", k)
		}
	}
}
