package signal

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	ok := map[string]string{
		"":                         "",
		"127.0.0.1:7000":           "ws://127.0.0.1:7000",
		" signal.home.arpa:7000 ":  "ws://signal.home.arpa:7000",
		"[::1]:7000":               "ws://[::1]:7000",
		"ws://127.0.0.1:7000":      "ws://127.0.0.1:7000",
		"WSS://signal.example.org": "wss://signal.example.org",
		"wss://example.org:8443/k": "wss://example.org:8443/k",
	}
	for in, want := range ok {
		got, err := ParseURL(in)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"127.0.0.1", "signal.example.org", ":7000", "127.0.0.1:0", "127.0.0.1:99999", "host:port",
		"http://127.0.0.1:7000", "https://signal.example.org", "tcp://1.2.3.4:7000", "ws://", "ws://:7000",
		"ws://user@host:7000", "ws:127.0.0.1:7000", "ws://host:http", "host/path:7000",
	} {
		got, err := ParseURL(in)
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q) = %q, %v; want ErrBadURL", in, got, err)
		}
	}
}

// Whatever a person writes, the result is refused (ErrBadURL), or is a
// ws:// or wss:// URL with a host, which parses to itself again.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7000", "ws://h:1", "wss://example.org/p?q", "[::1]:7000", "http://x", "h:0", "ws://u@h", "%zz:1", "WS://H:7000#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseURL(s)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("%q: an error that is not ErrBadURL: %v", s, err)
			}
			return
		}
		if strings.TrimSpace(s) == "" {
			if got != "" {
				t.Fatalf("%q: %q", s, got)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Hostname() == "" {
			t.Fatalf("%q gave %q: %v", s, got, err)
		}
		if again, err := ParseURL(got); err != nil || again != got {
			t.Fatalf("%q gave %q, which gives %q, %v", s, got, again, err)
		}
	})
}
