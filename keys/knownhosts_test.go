package keys

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh/knownhosts"
)

// OpenSSH's own known_hosts rules accept each friend's key under its
// alias, and no other key there.
func TestKnownHostsAreOpenSSHs(t *testing.T) {
	bob, carol := mustIdentity(t), mustIdentity(t)
	f, _ := ParseFriends([]byte(`name="bob" ` + FormatKey(bob.Public()) + "\n" + `name="carol" ` + FormatKey(carol.Public()) + "\n"))
	path := filepath.Join(t.TempDir(), "home", "known_hosts")
	if err := WriteKnownHosts(path, f); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}
	if err := check(HostAlias("bob")+":22", addr, bob.Public()); err != nil {
		t.Errorf("bob's own key: %v", err)
	}
	var ke *knownhosts.KeyError
	if err := check(HostAlias("bob")+":22", addr, carol.Public()); !errors.As(err, &ke) || len(ke.Want) == 0 {
		t.Errorf("carol's key as bob: %v, want a mismatch", err)
	}
}
