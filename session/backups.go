package session

import (
	"path/filepath"

	"kin/session/shell"
)

// sessionConfig says how g's "session" channels are served: everything a
// shell offers (permit-shell), or, for a friend who may only send files,
// just sftp confined to their own folder Backups/NAME (for restic's sftp
// backend and the like). ok is false when g gets no sessions at all.
func (s *Server) sessionConfig(g *Grant) (cfg shell.Config, ok bool) {
	if s.cfg.Shell != nil {
		cfg = *s.cfg.Shell
	}
	switch {
	case g.Perms.Shell && s.cfg.Shell != nil:
		return cfg, true
	case g.Perms.Shell && s.cfg.ShellOff != "":
		return cfg, false // shells are off here (kin up as root): say so, not "files only"
	case g.Perms.Files && !g.Ticket && s.cfg.Backups != "" && backupName(g.Name):
		cfg.SFTPRoot = filepath.Join(s.cfg.Backups, g.Name)
		return cfg, true
	}
	return cfg, false
}

// backupName reports whether a friend's name can be their folder's name:
// keys.ValidName allows "." and "..", which would not be a folder of
// their own.
func backupName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.IsLocal(name) && filepath.Base(name) == name
}
