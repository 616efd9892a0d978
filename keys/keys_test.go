package keys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

func TestFriendsRoundTrip(t *testing.T) {
	a, b := mustIdentity(t), mustIdentity(t)
	src := "# my friends\n\nname=\"mom\",permit-shell,permit-files,permit-port=22 " + a.AuthorizedKey() + " mom@pc\n"
	f, err := ParseFriends([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	mom, ok := f.ByName("MOM")
	if !ok || !mom.Perms.Shell || !mom.Perms.Files || !mom.Perms.AllowsPort(22) || mom.Perms.AllowsPort(23) {
		t.Fatalf("mom = %+v", mom)
	}
	if _, ok := f.ByKey(a.Public()); !ok {
		t.Fatal("ByKey misses mom")
	}
	var p Permissions
	if err := p.ParsePermission("port=8000,port=*"); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(Friend{Name: "bob", Key: b.Public(), Perms: p}); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(Friend{Name: "bob2", Key: b.Public()}); err == nil {
		t.Fatal("same key added twice")
	}
	if err := f.Add(Friend{Name: "Bob", Key: a.Public()}); err == nil {
		t.Fatal("same name added twice")
	}
	g, err := ParseFriends(f.Marshal())
	if err != nil {
		t.Fatalf("reparse: %v\n%s", err, f.Marshal())
	}
	bob, ok := g.ByName("bob")
	if !ok || !bob.Perms.AllowsPort(4242) || bob.ID() != b.ID() {
		t.Fatalf("bob = %+v", bob)
	}
	if !strings.HasPrefix(string(g.Marshal()), "# my friends\n\n") {
		t.Fatalf("comments lost:\n%s", g.Marshal())
	}
	if err := g.Remove("mom"); err != nil {
		t.Fatal(err)
	}
	if err := g.Remove("mom"); err == nil {
		t.Fatal("removed twice")
	}
	if h, err := ParseFriends(g.Marshal()); err != nil || len(h.List()) != 1 || h.List()[0].Name != "bob" {
		t.Fatalf("after rm: %v %+v", err, h)
	}
}

func TestFriendsRejectsBadLines(t *testing.T) {
	a := mustIdentity(t).AuthorizedKey()
	for _, line := range []string{
		a,                                      // no name
		`name="x",permit-root ` + a,            // unknown option
		`name="x",permit-port=70000 ` + a,      // bad port
		`name="a:b" ` + a,                      // bad name
		`name="kin1abc" ` + a,                  // ticket-like name
		`name="x" ssh-ed25519 AAAAnotbase64!!`, // bad key
		`name="x" ` + a + "\n" + `name="x" ` + mustIdentity(t).AuthorizedKey(), // dup name
		`name="x" ` + a + "\n" + `name="y" ` + a,                               // dup key
	} {
		if _, err := ParseFriends([]byte(line)); err == nil {
			t.Errorf("accepted %q", line)
		}
	}
}

func TestReadFriendsMissingIsEmpty(t *testing.T) {
	f, err := ReadFriends(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(f.List()) != 0 {
		t.Fatalf("%v %v", f, err)
	}
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

func FuzzParseTicket(f *testing.F) {
	f.Add(testTicket(f).String())
	f.Add(Ticket{Kind: TicketFiles, Peer: mustIdentity(f).Public(), Signal: "ws://h:1", Secret: NewSecret(), Instance: "ab12"}.String())
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
		if again.String() != tk.String() {
			t.Fatal("ticket does not round-trip")
		}
	})
}

func FuzzParseFriends(f *testing.F) {
	k := mustIdentity(f).AuthorizedKey()
	f.Add([]byte(`name="mom",permit-shell,permit-port=22 ` + k + " c\n# x\n"))
	f.Add([]byte(`name="a",permit-port="*" ` + k))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ParseFriends(data)
		if err != nil {
			return
		}
		again, err := ParseFriends(fr.Marshal())
		if err != nil {
			t.Fatalf("reparse of accepted file fails: %v", err)
		}
		if len(again.List()) != len(fr.List()) {
			t.Fatal("entry count changed")
		}
		for _, x := range fr.List() {
			if _, err := ParseFriends([]byte(x.Line())); err != nil {
				t.Fatalf("Line() of accepted friend does not parse: %v", err)
			}
		}
	})
}
