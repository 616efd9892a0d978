package keys

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is returned by LockFile(path, false) when another process
// holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is an exclusive lock on a file, held until Unlock or the process
// ends (so a crash never leaves it held).
type Lock struct{ f *os.File }

// LockFile opens (creating, mode 0600) and locks the file at path. With
// wait it blocks until the lock is free; without, it fails with ErrLocked.
func LockFile(path string, wait bool) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := lock(f, wait); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// SetContent replaces what the lock file says (for example which server
// its holder uses); readers see it with os.ReadFile.
func (l *Lock) SetContent(s string) error {
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	_, err := l.f.WriteAt([]byte(s), 0)
	return err
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	err := unlock(l.f)
	l.f.Close()
	return err
}
