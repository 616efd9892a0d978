package keys

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// HostAlias is the name a friend's key goes under in the known_hosts file
// WriteKnownHosts writes (OpenSSH's HostKeyAlias): kin-NAME.
func HostAlias(name string) string { return "kin-" + name }

// WriteKnownHosts writes every friend's key (their kin identity is their
// SSH host key) as an OpenSSH known_hosts file at path, each under its
// HostAlias, so that ssh, scp and sftp check the friend they reach
// through kin pipe.
func WriteKnownHosts(path string, friends *Friends) error {
	var lines []string
	for _, fr := range friends.List() {
		lines = append(lines, HostAlias(fr.Name)+" "+FormatKey(fr.Key))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := WriteFileAtomic(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
