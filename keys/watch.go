package keys

import (
	"log/slog"
	"strings"
)

// WatchFriends opens the friends file at path for a server that runs a
// while (a FriendsFile): edits apply at the next authentication; a change,
// a skipped line or an unreadable file (which lets no friend in) is
// logged once per change. It returns the file and what it says now; a
// file that cannot be read now is an error.
func WatchFriends(path string, log *slog.Logger) (*FriendsFile, *Friends, error) {
	first := true
	ff := &FriendsFile{Path: path, OnChange: func(f *Friends, skipped []LineError, err error) {
		defer func() { first = false }()
		if err != nil {
			log.Error("cannot read the friends file: no friend is let in until it can be read", "file", path, "err", err)
			return
		}
		if !first {
			log.Info("friends file changed", "file", path, "friends", len(f.List()))
		}
		for _, le := range skipped {
			log.Warn("friends file line skipped", "file", path, "line", le.Line, "err", le.Err)
		}
	}}
	f, _, err := ff.Current()
	if err != nil {
		return nil, nil, err
	}
	return ff, f, nil
}

// Find returns the friend a person means by s: the name they gave the
// friend, or the friend's kin ID (what kin share and kin receive print
// for others, who know us under names we cannot know).
func (f *Friends) Find(s string) (Friend, bool) {
	if fr, ok := f.ByName(s); ok {
		return fr, true
	}
	id := PeerID(strings.ToLower(s))
	if !id.Valid() {
		return Friend{}, false
	}
	for _, fr := range f.List() {
		if IDOf(fr.Key) == id {
			return fr, true
		}
	}
	return Friend{}, false
}
