package e2e

// UDP through kin, with real UDP services from Debian packages: dnsmasq
// (answering dig) and minetest-server (Luanti).

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kin/internal/netlab"
)

// freeUDPPort finds a UDP port nothing uses on 127.0.0.1 now.
func freeUDPPort(t *testing.T) int {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// dnsmasqArgs run dnsmasq in the foreground on port, unprivileged, with
// one name of its own: kin.test is 10.1.2.3.
func dnsmasqArgs(t *testing.T, port int) []string {
	return []string{"-k", "-p", fmt.Sprint(port), "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--address=/kin.test/10.1.2.3", "--conf-file=/dev/null",
		"--pid-file=" + filepath.Join(t.TempDir(), "dnsmasq.pid"), "--log-facility=-"}
}

// dig asks the DNS server at 127.0.0.1:port for kin.test and returns the
// answer (dig +short).
func dig(t *testing.T, cmd func(ctx context.Context, name string, args ...string) *exec.Cmd, port string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// One try, with a generous wait: a lost datagram would be a failure.
	out, err := cmd(ctx, "dig", "@127.0.0.1", "-p", port, "+short", "+tries=1", "+time=20", "kin.test", "A").CombinedOutput()
	if err != nil {
		t.Errorf("dig through kin: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func localCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

const forwardingUDPRE = `forwarding (127\.0\.0\.1:(\d+))/udp -> (\S+):(\d+)/udp`

// TestShareUDPDnsmasq: kin share PORT/udp in front of dnsmasq, and dig
// through kin connect, with a ticket and as a friend allowed port=N/udp.
func TestShareUDPDnsmasq(t *testing.T) {
	requireTool(t, "dnsmasq")
	requireTool(t, "dig")
	dnsPort := freeUDPPort(t)
	startProc(t, exec.Command("dnsmasq", dnsmasqArgs(t, dnsPort)...)).waitFor(`started, version`)

	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url)
	if _, errs, code := alice.run("share", fmt.Sprintf("%d/sctp", dnsPort)); code == 0 || !strings.Contains(errs, "tcp or udp") {
		t.Errorf("kin share PORT/sctp: exit %d, %s", code, errs)
	}
	udpPort := fmt.Sprintf("%d/udp", dnsPort)
	share := alice.start("share", udpPort)
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	share.waitFor(`sharing 127\.0\.0\.1:` + fmt.Sprint(dnsPort) + `/udp until`)

	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
	m := conn.waitFor(forwardingUDPRE)
	if m[3] != "alice" || m[4] != fmt.Sprint(dnsPort) {
		t.Errorf("forwarding line names %s:%s", m[3], m[4])
	}
	// Several dig processes at once: separate clients, separate mappings.
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := dig(t, localCommand, m[2]); got != "10.1.2.3" {
				t.Errorf("dig through kin (ticket) answered %q", got)
			}
		}()
	}
	wg.Wait()
	conn.Interrupt()
	if code := conn.exit(); code != 0 {
		t.Errorf("connect exit %d after Ctrl-C", code)
	}

	// As friends: the UDP port must be allowed as UDP.
	alice.mustRun("friends", "add", "bob", strings.TrimSpace(bob.mustRun("id")))
	bob.mustRun("friends", "add", "alice", strings.TrimSpace(alice.mustRun("id")))
	_, errs, code := bob.run("connect", "alice:"+udpPort, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "port "+udpPort) {
		t.Fatalf("connect to a UDP port not allowed: exit %d, %s", code, errs)
	}
	alice.mustRun("friends", "allow", "bob", "port="+udpPort)
	friends, err := os.ReadFile(filepath.Join(alice.Home, "friends"))
	if err != nil || !strings.Contains(string(friends), "permit-port="+udpPort+" ") {
		t.Fatalf("friends file after allow port=%s:\n%s (%v)", udpPort, friends, err)
	}
	// The TCP port of the same number is still not bob's.
	_, errs, code = bob.run("connect", fmt.Sprintf("alice:%d", dnsPort), "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "does not allow you port") {
		t.Fatalf("TCP port allowed by port=N/udp: exit %d, %s", code, errs)
	}
	conn = bob.start("connect", "alice:"+udpPort, "--listen", "127.0.0.1:0")
	m = conn.waitFor(forwardingUDPRE)
	if got := dig(t, localCommand, m[2]); got != "10.1.2.3" {
		t.Errorf("dig through kin (friend) answered %q", got)
	}
}

// minetestServer finds the Luanti/Minetest server binary.
func minetestServer(t *testing.T) string {
	for _, p := range []string{"/usr/lib/minetest/minetestserver", "/usr/lib/luanti/luantiserver"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, name := range []string{"minetestserver", "luantiserver"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return requireTool(t, "minetestserver")
}

// Minetest/Luanti's low-level protocol: every packet starts with the
// protocol id, the sender's peer id and a channel. A client's first packet
// comes from peer 0 (no id yet); the server answers with a reliable
// control packet that sets the client's peer id.
const minetestProtocolID = 0x4f457403

// minetestHello is that first packet: protocol id, peer id 0, channel 0,
// then TYPE_RELIABLE (3) with sequence number 65500 (SEQNUM_INITIAL)
// around TYPE_ORIGINAL (1) with no data.
var minetestHello = []byte{0x4f, 0x45, 0x74, 0x03, 0, 0, 0, 3, 0xff, 0xdc, 1}

// TestShareUDPMinetest: a Luanti/Minetest server shared with kin share
// PORT/udp answers a client's connection packet through kin connect.
func TestShareUDPMinetest(t *testing.T) {
	bin := minetestServer(t)
	port := freeUDPPort(t)
	dir := t.TempDir()
	world := filepath.Join(dir, "world")
	if err := os.MkdirAll(world, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(world, "world.mt"), []byte("gameid = devtest\nbackend = sqlite3\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "minetest.conf"), []byte("server_announce = false\n"), 0o644)
	mt := startProc(t, exec.Command(bin, "--config", filepath.Join(dir, "minetest.conf"), "--world", world,
		"--gameid", "devtest", "--port", fmt.Sprint(port), "--logfile", filepath.Join(dir, "log")))
	mt.waitFor(`listening on .*:` + fmt.Sprint(port))

	url, _ := startSignal(t)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url)
	bob := newUser(t, "bob")
	share := alice.start("share", fmt.Sprintf("%d/udp", port))
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:0")
	m := conn.waitFor(forwardingUDPRE)

	game, err := net.Dial("udp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer game.Close()
	if _, err := game.Write(minetestHello); err != nil {
		t.Fatal(err)
	}
	game.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	buf := make([]byte, 1500)
	n, err := game.Read(buf)
	if err != nil {
		t.Fatalf("no answer from the Minetest server through kin: %v", err)
	}
	reply := buf[:n]
	// protocol id, peer id 1 (the server), channel, TYPE_RELIABLE, seqnum,
	// TYPE_CONTROL (0), CONTROLTYPE_SET_PEER_ID (1), the new peer id.
	if n < 14 || binary.BigEndian.Uint32(reply) != minetestProtocolID || !bytes.Equal(reply[7:8], []byte{3}) || reply[10] != 0 || reply[11] != 1 {
		t.Fatalf("the server answered % x, not a peer id", reply)
	}
	t.Logf("the Minetest server set peer id %d through kin", binary.BigEndian.Uint16(reply[12:]))
}

// TestNATUDP: a DNS server behind one home router (NAT), dig behind
// another, through kin share 5353/udp and kin connect, in the NAT lab.
func TestNATUDP(t *testing.T) {
	lab := netlab.New(t)
	requireTool(t, "dnsmasq")
	requireTool(t, "dig")
	inet := lab.Internet()
	url := "ws://203.0.113.1:7000"
	server := labUser(t, "server", inet, url)
	server.start("signal", "--listen", "203.0.113.1:7000", "--turn", "203.0.113.1:3478").waitFor(`signaling server on`)
	ha, hb := lab.AddPeer(netlab.Restricted), lab.AddPeer(netlab.Restricted)
	startProc(t, ha.Command(context.Background(), "dnsmasq", dnsmasqArgs(t, 5353)...)).waitFor(`started, version`)

	alice := labUser(t, "alice", ha, url)
	bob := labUser(t, "bob", hb, url)
	share := alice.start("share", "5353/udp")
	ticket := share.waitFor(`^kin connect (kin1[a-z2-7]+)$`)[1]
	conn := bob.start("connect", ticket, "--listen", "127.0.0.1:5300")
	m := conn.waitFor(forwardingUDPRE + ` \((.*), connected in`)
	t.Logf("path: %s", m[5])
	if got := dig(t, hb.Command, "5300"); got != "10.1.2.3" {
		t.Errorf("dig across the NATs answered %q", got)
	}
}
