package session

import (
	"path/filepath"
	"testing"

	"kin/keys"
	"kin/session/shell"
)

// Who gets which kind of session: shell friends everything, files-only
// friends sftp in Backups/NAME, ticket holders and names that are not a
// folder of their own nothing.
func TestSessionConfigByPermission(t *testing.T) {
	backups := t.TempDir()
	s := &Server{cfg: ServerConfig{Shell: &shell.Config{}, Backups: backups}}
	for _, c := range []struct {
		g    Grant
		ok   bool
		root string
	}{
		{Grant{Name: "kid", Perms: keys.Permissions{Shell: true, Files: true}}, true, ""},
		{Grant{Name: "kid", Perms: keys.Permissions{Files: true}}, true, filepath.Join(backups, "kid")},
		{Grant{Name: "kid", Perms: keys.Permissions{AllPorts: true}}, false, ""},
		{Grant{Name: "ticket", Ticket: true, Perms: keys.Permissions{Files: true}}, false, ""},
		{Grant{Name: "..", Perms: keys.Permissions{Files: true}}, false, ""},
		{Grant{Name: ".", Perms: keys.Permissions{Files: true}}, false, ""},
	} {
		cfg, ok := s.sessionConfig(&c.g)
		if ok != c.ok || (ok && cfg.SFTPRoot != c.root) {
			t.Errorf("%s %s: ok %v root %q, want %v %q", c.g.Name, c.g.Perms, ok, cfg.SFTPRoot, c.ok, c.root)
		}
	}
	s.cfg.Backups = ""
	if _, ok := s.sessionConfig(&Grant{Name: "kid", Perms: keys.Permissions{Files: true}}); ok {
		t.Error("files-only friend got a session with no backups folder configured")
	}
}
