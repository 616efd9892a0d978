package netns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"kin/internal/netlab"
	"kin/internal/netns"
)

// TestDoAndDelete opens a listener inside a fresh namespace: a program
// run there reaches it, this namespace does not; Delete ends the program
// and the namespace, and a second Delete is no error.
func TestDoAndDelete(t *testing.T) {
	netlab.Require(t, netlab.Available())
	b := make([]byte, 3)
	rand.Read(b)
	ns := "kintest" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer netns.Delete(ns)
	if out, err := netns.Command(context.Background(), ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("inside\n"))
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the namespace's listener is reachable from this namespace")
	}
	// A program started in the namespace reaches it.
	sleeper := netns.Command(context.Background(), ns, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	out, err := netns.Command(context.Background(), ns, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(ln.Addr().String(), ":", "/", 1)+"; head -1 <&3").Output()
	if err != nil || string(out) != "inside\n" {
		t.Fatalf("from inside the namespace: %v %q", err, out)
	}
	if err := netns.Delete(ns); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Delete left a process running in the namespace")
	}
	if err := netns.Delete(ns); err != nil {
		t.Errorf("deleting a deleted namespace: %v", err)
	}
}
