package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"kin/internal/testconn"
	"kin/keys"
)

// How a handshake ends decides what the user is told: a peer that refuses
// us (or offers no way in we have) is ErrAuthRefused; a connection that
// breaks during authentication is not, whatever the client tried.
func TestAuthRefusalIsToldFromABrokenConnection(t *testing.T) {
	host, me := ident(t), ident(t)
	cases := []struct {
		name    string
		server  func(cut func()) *ssh.ServerConfig
		refused bool
	}{
		{"peer refuses", func(func()) *ssh.ServerConfig {
			return &ssh.ServerConfig{
				PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, errors.New("no") },
				PasswordCallback:  func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { return nil, errors.New("no") },
			}
		}, true},
		{"peer offers another method", func(func()) *ssh.ServerConfig {
			return &ssh.ServerConfig{
				KeyboardInteractiveCallback: func(ssh.ConnMetadata, ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
					return nil, errors.New("no")
				},
			}
		}, true},
		{"connection cut during authentication", func(cut func()) *ssh.ServerConfig {
			return &ssh.ServerConfig{
				PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { cut(); return nil, errors.New("cut") },
				PasswordCallback:  func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { cut(); return nil, errors.New("cut") },
			}
		}, false},
	}
	for _, c := range cases {
		for _, secret := range [][]byte{nil, keys.NewSecret()} {
			a, b := testconn.TCPPair(t)
			cfg := c.server(func() { b.Close() })
			cfg.AddHostKey(host.Signer)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if sc, _, _, err := ssh.NewServerConn(b, cfg); err == nil {
					sc.Close()
				}
				b.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cl, err := NewClient(ctx, a, ClientConfig{Identity: me, HostKey: host.Public(), Secret: secret})
			cancel()
			a.Close()
			<-done
			if err == nil {
				cl.Close()
				t.Fatalf("%s (ticket %v): no error", c.name, secret != nil)
			}
			if errors.Is(err, ErrAuthRefused) != c.refused {
				t.Errorf("%s (ticket %v): %v; refused: %v, want %v", c.name, secret != nil, err, errors.Is(err, ErrAuthRefused), c.refused)
			}
		}
	}
}
