package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// FriendsFile is the friends file of a running server: Current re-reads it
// when it has changed on disk (another inode, size, mode or modification
// time), so edits apply to the next authentication, and costs one stat
// otherwise. A file that cannot be read means no friends: a broken file
// never keeps a removed friend in.
type FriendsFile struct {
	Path string
	// OnChange, if set, is called once each time what the file says
	// changes (and at the first read), with what Current returns then.
	// It runs with the FriendsFile locked: it must not call Current.
	OnChange func(f *Friends, skipped []LineError, err error)

	mu      sync.Mutex
	read    bool
	stat    fs.FileInfo // of the file last read; nil: it did not exist
	racy    bool        // modified so recently that a same-size rewrite could hide behind the same mtime
	data    []byte
	friends *Friends
	skipped []LineError
	err     error
}

// racyWindow is how close to "now" a file's mtime may be before its stat is
// not trusted to show the next change: file systems store mtimes with a
// granularity of up to 2 s (FAT), and a write within the same tick that
// keeps the size would otherwise go unseen (the "racy git" problem).
const racyWindow = 3 * time.Second

// Current returns the friends the file lists now, and the lines it skips.
// err is set when the file exists but cannot be read; the friends are then
// empty. The *Friends returned is shared: do not modify it.
func (ff *FriendsFile) Current() (*Friends, []LineError, error) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	st, err := os.Stat(ff.Path)
	if errors.Is(err, fs.ErrNotExist) {
		st, err = nil, nil
	}
	if err == nil && ff.read && !ff.racy && sameStat(ff.stat, st) {
		return ff.friends, ff.skipped, ff.err
	}
	ff.reload()
	return ff.friends, ff.skipped, ff.err
}

// Get returns the friends the file lists now (none if it cannot be read),
// as session.ServerConfig.Friends wants them.
func (ff *FriendsFile) Get() *Friends {
	f, _, _ := ff.Current()
	return f
}

// reload reads the file and calls OnChange if what it says changed.
func (ff *FriendsFile) reload() {
	data, st, err := readWithStat(ff.Path)
	ff.stat = st
	ff.racy = st != nil && time.Since(st.ModTime()) < racyWindow
	if ff.read && sameError(err, ff.err) && bytes.Equal(data, ff.data) {
		return // touched, or rewritten with the same text, or still unreadable
	}
	ff.read = true
	ff.data = data
	if err != nil {
		ff.friends, ff.skipped, ff.err = &Friends{}, nil, err
	} else {
		ff.friends, ff.skipped = ParseFriends(data)
		ff.err = nil
	}
	if ff.OnChange != nil {
		ff.OnChange(ff.friends, ff.skipped, ff.err)
	}
}

// readWithStat reads the file and stats the same open file, so the stat
// is never newer than the text. A missing file is empty, with a nil stat.
func readWithStat(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read friends: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read friends: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, st, fmt.Errorf("read friends: %s is not a regular file", path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, st, fmt.Errorf("read friends: %w", err)
	}
	return data, st, nil
}

// sameStat reports whether a and b (either may be nil: no file) describe
// the same version of a file.
func sameStat(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.Mode() == b.Mode() && a.ModTime().Equal(b.ModTime())
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Error() == b.Error()
}
