package session

import (
	"net"
	"strconv"

	"kin/keys"
)

// Port is a port of this machine that a server shares (kin share): TCP,
// or UDP, written PORT/udp as docker and firewalls write it.
type Port struct {
	Num int
	UDP bool
}

func (p Port) String() string { return keys.FormatPort(p.Num, p.UDP) }

// Target is where the port's traffic goes on this machine. UDP goes to
// IPv4 loopback: a datagram cannot try ::1 first as a TCP dial does.
func (p Port) Target() string {
	if p.UDP {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Num))
	}
	return net.JoinHostPort("localhost", strconv.Itoa(p.Num))
}

// Grant is what a ticket for the port grants: the port, nothing else.
func (p Port) Grant() keys.Permissions {
	if p.UDP {
		return keys.Permissions{UDPPorts: []int{p.Num}}
	}
	return keys.Permissions{Ports: []int{p.Num}}
}

// AllowedBy reports whether perms let a friend use the port.
func (p Port) AllowedBy(perms keys.Permissions) bool {
	if p.UDP {
		return perms.AllowsUDPPort(p.Num)
	}
	return perms.AllowsPort(p.Num)
}

// ServeIn has cfg's server carry the port to its Target.
func (p Port) ServeIn(cfg *ServerConfig) {
	if p.UDP {
		cfg.UDPPorts = map[int]string{p.Num: p.Target()}
	} else {
		cfg.Ports = map[int]string{p.Num: p.Target()}
	}
}

// OneTicket is a ServerConfig.Tickets that knows one ticket: its secret
// grants grant.
func OneTicket(secret []byte, grant keys.Permissions) func([]byte) (keys.Permissions, bool) {
	return func(s []byte) (keys.Permissions, bool) {
		if keys.SecretEqual(s, secret) {
			return grant, true
		}
		return keys.Permissions{}, false
	}
}
