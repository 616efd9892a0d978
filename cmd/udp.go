package cmd

// UDP in kin share and kin connect: PORT/udp, as docker and firewalls write it.

import (
	"net"
	"strconv"

	"kin/keys"
	"kin/session"
)

// sharedPort is the port kin share shares: TCP, or UDP with /udp.
type sharedPort struct {
	port int
	udp  bool
}

func (p sharedPort) String() string { return keys.FormatPort(p.port, p.udp) }

// target is where the port's traffic goes on this machine. UDP goes to
// IPv4 loopback: a datagram cannot try ::1 first as a TCP dial does.
func (p sharedPort) target() string {
	if p.udp {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	}
	return net.JoinHostPort("localhost", strconv.Itoa(p.port))
}

// perms is what a ticket for the port grants.
func (p sharedPort) perms() keys.Permissions {
	if p.udp {
		return keys.Permissions{UDPPorts: []int{p.port}}
	}
	return keys.Permissions{Ports: []int{p.port}}
}

// serve puts the port into a session config.
func (p sharedPort) serve(cfg *session.ServerConfig) {
	if p.udp {
		cfg.UDPPorts = map[int]string{p.port: p.target()}
	} else {
		cfg.Ports = map[int]string{p.port: p.target()}
	}
}

func (p sharedPort) allows(perms keys.Permissions) bool {
	if p.udp {
		return perms.AllowsUDPPort(p.port)
	}
	return perms.AllowsPort(p.port)
}

// friendsAllowed names the friends allowed the port.
func friendsAllowed(f *keys.Friends, p sharedPort) []string {
	var names []string
	for _, fr := range f.List() {
		if p.allows(fr.Perms) {
			names = append(names, fr.Name)
		}
	}
	return names
}
