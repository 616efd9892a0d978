package agent

import (
	"sync"

	"kin/keys"
	"kin/session"
)

// Shares are the tickets the agent serves for kin share commands: each
// secret grants one port (TCP or UDP), for as long as its command stays connected.
type Shares struct {
	mu   sync.Mutex
	list []share
}

type share struct {
	secret []byte
	port   int
	udp    bool
}

// Add serves port to holders of secret until remove is called.
func (s *Shares) Add(port int, udp bool, secret []byte) (remove func()) {
	sh := &share{secret: append([]byte(nil), secret...), port: port, udp: udp}
	s.mu.Lock()
	s.list = append(s.list, *sh)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.list {
			if keys.SecretEqual(x.secret, sh.secret) && x.port == sh.port && x.udp == sh.udp {
				s.list = append(s.list[:i:i], s.list[i+1:]...)
				return
			}
		}
	}
}

// Tickets is a session.ServerConfig.Tickets: what a secret grants.
func (s *Shares) Tickets(secret []byte) (keys.Permissions, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.list {
		if keys.SecretEqual(secret, x.secret) {
			return session.Port{Num: x.port, UDP: x.udp}.Grant(), true
		}
	}
	return keys.Permissions{}, false
}
