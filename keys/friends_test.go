package keys

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFriendsRoundTrip(t *testing.T) {
	a, b := mustIdentity(t), mustIdentity(t)
	src := "# my friends\n\nname=\"mom\",permit-shell,permit-files,permit-port=22 " + a.AuthorizedKey() + " mom@pc\n"
	f, skipped := ParseFriends([]byte(src))
	if skipped != nil {
		t.Fatal(skipped)
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
	g, skipped := ParseFriends(f.Marshal())
	if skipped != nil {
		t.Fatalf("reparse: %v\n%s", skipped, f.Marshal())
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
	if h, skipped := ParseFriends(g.Marshal()); skipped != nil || len(h.List()) != 1 || h.List()[0].Name != "bob" {
		t.Fatalf("after rm: %v %+v", skipped, h)
	}
}

func TestFriendsSkipsBadLinesKeepsGoodOnes(t *testing.T) {
	a, b := mustIdentity(t).AuthorizedKey(), mustIdentity(t).AuthorizedKey()
	good := `name="good",permit-shell ` + b
	for _, c := range []struct {
		line, name string // name: what LineError.Name should say
	}{
		{a, ""},                                       // no name
		{`name="x",permit-root ` + a, "x"},            // unknown option
		{`name="x",permit-port=70000 ` + a, "x"},      // bad port
		{`name="a:b" ` + a, ""},                       // bad name
		{`name="kin1abc" ` + a, ""},                   // ticket-like name
		{`name="x" ssh-ed25519 AAAAnotbase64!!`, "x"}, // bad key
		{`name="x",permit-shell=1 ` + a, "x"},         // option with a value it does not take
		{"this is not a friend line", ""},             // junk
		{`name="Good" ` + a, "Good"},                  // the name of line 2 again
		{`name="y",permit-files ` + b, "y"},           // the key of line 2 again
	} {
		src := "# friends\n" + good + "\n" + c.line + "\n\n"
		f, skipped := ParseFriends([]byte(src))
		if len(skipped) != 1 || skipped[0].Line != 3 || skipped[0].Name != c.name {
			t.Errorf("%q: skipped %+v, want line 3 named %q", c.line, skipped, c.name)
			continue
		}
		if !strings.HasPrefix(skipped[0].Error(), "line 3: ") {
			t.Errorf("%q: error %q does not name the line", c.line, skipped[0])
		}
		// The good line applies, and only it.
		if l := f.List(); len(l) != 1 || l[0].Name != "good" || !l[0].Perms.Shell {
			t.Errorf("%q: friends %+v", c.line, l)
		}
		if string(f.Marshal()) != src {
			t.Errorf("%q: rewrite changed the file:\n%s", c.line, f.Marshal())
		}
	}
}

// The first line for a key counts, as in OpenSSH: a later line cannot
// widen (or narrow) what an earlier one grants.
func TestFriendsFirstLineForAKeyCounts(t *testing.T) {
	a := mustIdentity(t)
	f, skipped := ParseFriends([]byte(`name="a" ` + a.AuthorizedKey() + "\n" + `name="b",permit-shell ` + a.AuthorizedKey() + "\n"))
	fr, ok := f.ByKey(a.Public())
	if !ok || fr.Name != "a" || fr.Perms.Shell || len(skipped) != 1 || skipped[0].Line != 2 {
		t.Fatalf("friend %+v ok=%v skipped %v", fr, ok, skipped)
	}
}

func TestRemoveByNameTakesBrokenLinesAndKeepsTheRest(t *testing.T) {
	a, b, c := mustIdentity(t).AuthorizedKey(), mustIdentity(t).AuthorizedKey(), mustIdentity(t).AuthorizedKey()
	src := "# mine\r\n" +
		`name="bob",permit-port=99999 ` + a + "\n" + // broken, but named
		"junk line\n" +
		`name="carol"  ` + b + "  carol@pc\r\n" +
		`name="BOB" ` + c + "\n"
	f, skipped := ParseFriends([]byte(src))
	if len(skipped) != 2 || len(f.List()) != 2 {
		t.Fatalf("skipped %v, friends %v", skipped, f.List())
	}
	if err := f.Add(Friend{Name: "bob2", Key: mustIdentity(t).Public()}); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("bob"); err != nil {
		t.Fatal(err)
	}
	want := "# mine\r\njunk line\n" + `name="carol"  ` + b + "  carol@pc\r\n" + f.List()[1].Line() + "\n"
	if got := string(f.Marshal()); got != want {
		t.Fatalf("after rm bob:\n%q\nwant\n%q", got, want)
	}
	if err := f.Remove("bob"); !errors.Is(err, ErrNoFriend) || !strings.Contains(err.Error(), `no friend named "bob"`) {
		t.Fatalf("second rm: %v", err)
	}
	// A name only a broken line has cannot be added again.
	g, _ := ParseFriends([]byte(`name="dan",bogus ` + a + "\n"))
	if err := g.Add(Friend{Name: "Dan", Key: mustIdentity(t).Public()}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("add over a broken line's name: %v", err)
	}
}

func TestSetPermsChangesOnlyThatLine(t *testing.T) {
	a, b := mustIdentity(t), mustIdentity(t)
	src := "# top\n" +
		`  name="bob",permit-port=22 ` + a.AuthorizedKey() + "   bob@laptop  \r\n" +
		"bad line\n" +
		`name="carol",permit-shell ` + b.AuthorizedKey() + "\n"
	f, _ := ParseFriends([]byte(src))
	bob, _ := f.ByName("bob")
	p := bob.Perms
	if err := p.ParsePermission("shell,port=8000"); err != nil {
		t.Fatal(err)
	}
	if err := f.SetPerms("BOB", p); err != nil {
		t.Fatal(err)
	}
	want := "# top\n" +
		`  name="bob",permit-shell,permit-port=22,permit-port=8000 ` + a.AuthorizedKey() + "   bob@laptop  \r\n" +
		"bad line\n" +
		`name="carol",permit-shell ` + b.AuthorizedKey() + "\n"
	if got := string(f.Marshal()); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if bob, _ := f.ByKey(a.Public()); !bob.Perms.Shell || !bob.Perms.AllowsPort(8000) || bob.Comment != "bob@laptop" {
		t.Fatalf("bob = %+v", bob)
	}
	if err := f.SetPerms("nobody", p); !errors.Is(err, ErrNoFriend) {
		t.Fatalf("SetPerms(nobody): %v", err)
	}
	g, _ := ParseFriends([]byte(`name="dan",bogus ` + a.AuthorizedKey() + "\n"))
	if err := g.SetPerms("dan", p); err == nil || errors.Is(err, ErrNoFriend) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("SetPerms on a broken line: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	parse := func(s string) Permissions {
		var p Permissions
		if err := p.ParsePermission(s); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ have, deny, want string }{
		{"shell,files,port=22,port=80", "shell,port=22", "files,port=80"},
		{"shell,port=*", "port=*", "shell"},
		{"port=22,port=80", "port=*", "nothing"},
		{"files", "port=5", "files"},
		{"port=53,port=53/udp,port=30000/udp", "port=53/udp", "port=53,port=30000/udp"},
		{"port=22,port=30000/udp", "port=*", "nothing"},
		{"port=30000/udp", "port=30000", "port=30000/udp"},
	} {
		p := parse(c.have)
		if err := p.Revoke(parse(c.deny)); err != nil || p.String() != c.want {
			t.Errorf("%s - %s = %s (%v), want %s", c.have, c.deny, p, err, c.want)
		}
	}
	p := parse("port=*,shell")
	if err := p.Revoke(parse("shell,port=22")); err == nil || p.String() != "shell,port=*" {
		t.Errorf("port=22 out of port=*: %v, %s", err, p)
	}
	if err := p.Revoke(parse("port=30000/udp")); err == nil || p.String() != "shell,port=*" {
		t.Errorf("port=30000/udp out of port=*: %v, %s", err, p)
	}
}

// UDP ports are permissions of their own: port=N/udp in the friends file
// as permit-port=N/udp, apart from TCP port N; port=* is both.
func TestUDPPermissions(t *testing.T) {
	a, b := mustIdentity(t), mustIdentity(t)
	tcpLine := `name="mom",permit-shell,permit-port=22 ` + a.AuthorizedKey() + " mom@pc"
	src := tcpLine + "\n" + `name="bob",permit-port=30000/udp,permit-port="53/UDP",permit-port=53/tcp ` + b.AuthorizedKey() + "\n"
	f, skipped := ParseFriends([]byte(src))
	if skipped != nil {
		t.Fatal(skipped)
	}
	bob, _ := f.ByName("bob")
	p := bob.Perms
	if !p.AllowsUDPPort(30000) || p.AllowsPort(30000) || !p.AllowsUDPPort(53) || !p.AllowsPort(53) || p.AllowsUDPPort(22) {
		t.Fatalf("bob = %+v", p)
	}
	if p.String() != "port=53,port=53/udp,port=30000/udp" {
		t.Fatalf("String() = %q", p.String())
	}
	// Older TCP lines are read and written as before.
	if string(f.Marshal()) != src {
		t.Fatalf("file changed:\n%s", f.Marshal())
	}
	mom, _ := f.ByName("mom")
	if mom.Perms.AllowsUDPPort(22) {
		t.Fatal("permit-port=22 allows UDP 22")
	}
	mom.Perms.Grant(Permissions{UDPPorts: []int{30000}})
	if err := f.SetPerms("mom", mom.Perms); err != nil {
		t.Fatal(err)
	}
	want := `name="mom",permit-shell,permit-port=22,permit-port=30000/udp ` + a.AuthorizedKey() + " mom@pc"
	if got := strings.Split(string(f.Marshal()), "\n")[0]; got != want {
		t.Fatalf("mom's line:\n%s\nwant\n%s", got, want)
	}
	// port=* is every port, TCP and UDP.
	var all Permissions
	if err := all.ParsePermission("port=*"); err != nil || !all.AllowsUDPPort(30000) || !all.AllowsPort(30000) {
		t.Fatalf("port=* = %+v, %v", all, err)
	}
	for _, bad := range []string{"port=30000/sctp", "port=/udp", "port=0/udp", "port=70000/udp", "port=1/udp/udp", "port=*/udp"} {
		var q Permissions
		if err := q.ParsePermission(bad); err == nil {
			t.Errorf("%s accepted: %+v", bad, q)
		}
	}
	for _, c := range []struct {
		in   string
		port int
		udp  bool
	}{{"30000/udp", 30000, true}, {"30000/UDP", 30000, true}, {"80/tcp", 80, false}, {"80", 80, false}} {
		port, udp, err := ParsePortProto(c.in)
		if err != nil || port != c.port || udp != c.udp {
			t.Errorf("ParsePortProto(%q) = %d %v %v", c.in, port, udp, err)
		}
	}
	if FormatPort(30000, true) != "30000/udp" || FormatPort(80, false) != "80" {
		t.Error("FormatPort")
	}
}

func TestReadFriendsMissingIsEmpty(t *testing.T) {
	f, skipped, err := ReadFriends(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(f.List()) != 0 || skipped != nil {
		t.Fatalf("%v %v %v", f, skipped, err)
	}
}

func TestLooksLikePrivateKey(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "k")).CombinedOutput(); err != nil {
		t.Skipf("ssh-keygen: %v %s", err, out)
	}
	priv, _ := os.ReadFile(filepath.Join(dir, "k"))
	pub, _ := os.ReadFile(filepath.Join(dir, "k.pub"))
	lines := strings.Split(strings.TrimSpace(string(priv)), "\n")
	for _, s := range []string{string(priv), strings.Join(lines[1:len(lines)-1], ""), lines[1], lines[0],
		"-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "PuTTY-User-Key-File-3: ssh-ed25519"} {
		if !LooksLikePrivateKey(s) {
			t.Errorf("missed %q", s)
		}
	}
	for _, s := range []string{string(pub), mustIdentity(t).AuthorizedKey(), "bob", "port=22"} {
		if LooksLikePrivateKey(s) {
			t.Errorf("public text %q taken for a private key", s)
		}
	}
}

// FuzzParseFriends checks the line parser: it never fails as a whole,
// rewrites every line as it was, names each skipped line by its number,
// and edits (set permissions, remove) change only the lines they mean to.
func FuzzParseFriends(f *testing.F) {
	k := mustIdentity(f).AuthorizedKey()
	k2 := mustIdentity(f).AuthorizedKey()
	f.Add([]byte(`name="mom",permit-shell,permit-port=22 ` + k + " c\n# x\n"))
	f.Add([]byte(`name="a",permit-port="*" ` + k))
	f.Add([]byte("junk\r\n\n" + `name="a",permit-files ` + k + "\n" + `name="b" ` + k + "\n" + `name="A" ` + k2 + "\n"))
	f.Add([]byte(`name="q\"x",permit-port=1 ` + k + "\n" + `  name="c" ` + k2 + "\t c \r"))
	f.Add([]byte(`name="g",permit-port=30000/udp,permit-port=30000,permit-port="53/UDP" ` + k + "\n" + `name="h",permit-port=1/tcp,permit-port=2/sctp ` + k2))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, skipped := ParseFriends(data)
		want := string(data)
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if want == "\n" {
			want = ""
		}
		if got := string(fr.Marshal()); got != want {
			t.Fatalf("Marshal changed the file:\n%q\n%q", data, got)
		}
		nlines := strings.Count(want, "\n")
		seen := map[int]bool{}
		for _, le := range skipped {
			if le.Line < 1 || le.Line > nlines || seen[le.Line] || le.Err == nil {
				t.Fatalf("bad LineError %+v of %d lines", le, nlines)
			}
			seen[le.Line] = true
		}
		again, skipped2 := ParseFriends(fr.Marshal())
		if len(again.List()) != len(fr.List()) || len(skipped2) != len(skipped) {
			t.Fatal("reparse changed the entries")
		}
		lines := strings.Split(want, "\n")
		for _, x := range fr.List() {
			one, s := ParseFriends([]byte(x.Line()))
			if len(s) != 0 || len(one.List()) != 1 || one.List()[0].Perms.String() != x.Perms.String() {
				t.Fatalf("Line() of accepted friend %+v does not parse back: %v", x, s)
			}
			// Setting a friend's permissions changes one line and
			// keeps every friend.
			ed, _ := ParseFriends(data)
			p := x.Perms
			p.Shell = !p.Shell
			if err := ed.SetPerms(x.Name, p); err != nil {
				t.Fatalf("SetPerms(%q): %v", x.Name, err)
			}
			if got, ok := ed.ByName(x.Name); !ok || got.Perms.String() != p.String() {
				t.Fatalf("after SetPerms(%q): %+v", x.Name, got)
			}
			edLines := strings.Split(string(ed.Marshal()), "\n")
			if len(edLines) != len(lines) || len(ed.List()) != len(fr.List()) {
				t.Fatalf("SetPerms(%q) changed the number of lines or friends", x.Name)
			}
			diff := 0
			for i := range lines {
				if lines[i] != edLines[i] {
					diff++
				}
			}
			if diff > 1 {
				t.Fatalf("SetPerms(%q) changed %d lines", x.Name, diff)
			}
			// Removing a friend keeps every other friend.
			rm, _ := ParseFriends(data)
			if err := rm.Remove(x.Name); err != nil {
				t.Fatal(err)
			}
			if _, ok := rm.ByName(x.Name); ok {
				t.Fatalf("Remove(%q) left it", x.Name)
			}
			for _, y := range fr.List() {
				if !strings.EqualFold(y.Name, x.Name) {
					if _, ok := rm.ByKey(y.Key); !ok {
						t.Fatalf("Remove(%q) took %q too", x.Name, y.Name)
					}
				}
			}
		}
	})
}
