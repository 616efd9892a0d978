package shell

import "testing"

// One word is a shell line; several are quoted so that each stays one word.
func TestCommandLine(t *testing.T) {
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"ls | wc -l"}, "ls | wc -l"},
		{[]string{"df", "-h"}, "df -h"},
		{[]string{"sh", "-c", "exit 7"}, "sh -c 'exit 7'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"printf", ""}, "printf ''"},
	}
	for _, c := range cases {
		if got := CommandLine(c.words); got != c.want {
			t.Errorf("CommandLine(%q) = %q, want %q", c.words, got, c.want)
		}
	}
}
