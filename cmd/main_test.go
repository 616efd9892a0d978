package cmd

import (
	"io"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReorderArgsPutsFlagsBeforePositionals(t *testing.T) {
	app := newApp(nil, io.Discard, io.Discard)
	cases := [][2][]string{
		{{"kin", "connect", "kin1abc", "--listen", "127.0.0.1:9000"}, {"kin", "connect", "--listen", "127.0.0.1:9000", "kin1abc"}},
		{{"kin", "--verbose", "connect", "kin1abc", "-l=x"}, {"kin", "--verbose", "connect", "-l=x", "kin1abc"}},
		{{"kin", "--home", "/h", "friends", "add", "bob", "ssh-ed25519 AAAA", "--allow", "port=1"}, {"kin", "--home", "/h", "friends", "add", "--allow", "port=1", "bob", "ssh-ed25519 AAAA"}},
		{{"kin", "share", "3000"}, {"kin", "share", "3000"}},
		{{"kin", "nosuch", "--x"}, {"kin", "nosuch", "--x"}},
	}
	for _, c := range cases {
		if got := reorderArgs(app, c[0]); !slices.Equal(got, c[1]) {
			t.Errorf("reorderArgs(%q) = %q, want %q", c[0], got, c[1])
		}
	}
}
