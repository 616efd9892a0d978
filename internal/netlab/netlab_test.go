package netlab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a tiny UDP tool run inside namespaces:
// NETLAB_REFLECT=addr answers each datagram with the sender's address;
// NETLAB_ASK=addr sends one datagram there from port 40000 and prints the answer.
func TestMain(m *testing.M) {
	if addr := os.Getenv("NETLAB_REFLECT"); addr != "" {
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		// Serve until the test is done with us: it closes our stdin
		// (or dies). A fixed lifetime ran out under load (-race).
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
		fmt.Println("ready")
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				os.Exit(0)
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}
	if addr := os.Getenv("NETLAB_ASK"); addr != "" {
		c, err := net.ListenPacket("udp4", ":40000")
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		to, _ := net.ResolveUDPAddr("udp4", addr)
		buf := make([]byte, 1500)
		for i := 0; i < 20; i++ {
			c.WriteTo([]byte("hi"), to)
			c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			if n, _, err := c.ReadFrom(buf); err == nil {
				fmt.Print(string(buf[:n]))
				os.Exit(0)
			}
		}
		fmt.Print("timeout")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func self(t *testing.T) string {
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ask sends one datagram from h to addr and returns what the reflector
// saw as our source address, or "timeout".
func ask(t *testing.T, h *Host, addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := h.Command(ctx, "env", "NETLAB_ASK="+addr, self(t))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ask: %v %s", err, out)
	}
	return string(out)
}

// reflect runs a reflector on addr in h until the test ends, and returns
// once it listens.
func reflect(t *testing.T, h *Host, addr string) {
	cmd := h.Command(context.Background(), "env", "NETLAB_REFLECT="+addr, self(t))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("reflector on %s: %q", addr, line)
	}
}

func TestNATsMapAsNamed(t *testing.T) {
	l := New(t)
	inet := l.Internet()
	reflect(t, inet, "203.0.113.1:3478")
	reflect(t, inet, "203.0.113.1:3479")
	pub := l.AddPeer(Public)
	res := l.AddPeer(Restricted)
	sym := l.AddPeer(Symmetric)
	full := l.AddPeer(FullCone)
	blocked := l.AddPeer(UDPBlocked)
	double := l.AddPeer(DoubleNAT)

	if got := ask(t, pub, "203.0.113.1:3478"); got != pub.WAN+":40000" {
		t.Errorf("public peer seen as %q", got)
	}
	// Restricted: the WAN address, and the same external port for two
	// destinations (endpoint-independent mapping).
	a, b := ask(t, res, "203.0.113.1:3478"), ask(t, res, "203.0.113.1:3479")
	if !strings.HasPrefix(a, res.WAN+":") {
		t.Errorf("restricted peer seen as %q, want %s:*", a, res.WAN)
	}
	if a != b {
		t.Errorf("restricted NAT mapped one socket to %q and %q", a, b)
	}
	// Symmetric: a different external port per destination.
	a, b = ask(t, sym, "203.0.113.1:3478"), ask(t, sym, "203.0.113.1:3479")
	if !strings.HasPrefix(a, sym.WAN+":") || a == b {
		t.Errorf("symmetric NAT: %q and %q", a, b)
	}
	// Unsolicited traffic from the internet does not get in.
	reflect(t, res, "10.0.2.2:5000")
	if got := ask(t, inet, res.WAN+":5000"); got != "timeout" {
		t.Errorf("unsolicited datagram got through the restricted NAT: %q", got)
	}
	// Full cone: the port is kept, and anyone may send to it unsolicited.
	if got := ask(t, full, "203.0.113.1:3478"); got != full.WAN+":40000" {
		t.Errorf("full-cone peer seen as %q", got)
	}
	reflect(t, full, full.Addr+":5000")
	if got := ask(t, inet, full.WAN+":5000"); got != inet.Addr+":40000" {
		t.Errorf("full-cone NAT did not let an unsolicited datagram in: %q", got)
	}
	// UDP blocked: nothing gets out.
	if got := ask(t, blocked, "203.0.113.1:3478"); got != "timeout" {
		t.Errorf("UDP got out of the UDP-blocking network: %q", got)
	}
	// Double NAT: the carrier's address, still endpoint-independent.
	a, b = ask(t, double, "203.0.113.1:3478"), ask(t, double, "203.0.113.1:3479")
	if !strings.HasPrefix(a, double.WAN+":") || a != b {
		t.Errorf("double NAT: %q and %q, want one %s:* mapping", a, b, double.WAN)
	}
}

func TestCleanupRemovesNamespaces(t *testing.T) {
	if why := Available(); why != "" {
		if os.Getenv("KIN_NETLAB_REQUIRED") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	var prefix string
	t.Run("lab", func(t *testing.T) {
		l := New(t)
		l.AddPeer(Restricted)
		prefix = l.prefix
	})
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), prefix) {
		t.Fatalf("namespaces left behind:\n%s", out)
	}
}
