package signal

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// ErrBadURL is what ParseURL's errors wrap.
var ErrBadURL = errors.New("not a signaling server address")

// ParseURL checks the signaling server address a person gave (--signal or
// KIN_SIGNAL): a ws:// or wss:// URL, or HOST:PORT, which means
// ws://HOST:PORT, as kin signal prints it. Empty stays empty.
func ParseURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	bad := func(why string) error {
		return fmt.Errorf("signaling server %q: %s (%w)", s, why, ErrBadURL)
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" || strings.ContainsAny(host, "/?#@ ") {
			return "", bad("not a URL, and not HOST:PORT")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", bad("the port must be a number from 1 to 65535")
		}
		s = "ws://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", bad("not a URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "wss":
	default:
		return "", bad("a signaling server URL starts with ws:// or wss://")
	}
	if u.Hostname() == "" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return "", bad("the URL needs a host, and nothing before it")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", bad("the port must be a number from 1 to 65535")
		}
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u.String(), nil
}
