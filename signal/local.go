package signal

import (
	"fmt"
	"net"
	"slices"
	"strconv"
)

// ListenLocal opens the listener of a signaling server that a command runs
// for one network (kin share with no server configured), and returns the
// ws:// URL the other computers there reach it at. With ICE limited to
// loopback (interfaces is just loopback ones) it listens on 127.0.0.1;
// otherwise on every address, named by the first IPv4 LAN address of an
// interface that is up and allowed (interfaces empty: any).
func ListenLocal(interfaces []string) (net.Listener, string, error) {
	listen, host := localAddr(interfaces)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", fmt.Errorf("listen for the built-in signaling server: %w", err)
	}
	return ln, "ws://" + net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), nil
}

// localAddr picks where ListenLocal listens and the host others reach it at.
func localAddr(interfaces []string) (listen, host string) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "127.0.0.1:0", "127.0.0.1"
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if len(interfaces) > 0 && !slices.Contains(interfaces, ifc.Name) {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ":0", ipn.IP.String()
			}
		}
	}
	return "127.0.0.1:0", "127.0.0.1"
}
