package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDoAndDelete opens a listener inside a fresh namespace: a program
// run there reaches it, this namespace does not; Delete ends the program
// and the namespace, and a second Delete is no error.
func TestDoAndDelete(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("KIN_NETLAB_REQUIRED") != "" {
			t.Fatal("network namespaces need root here")
		}
		t.Skip("needs root")
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "kintest" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer Delete(ns)
	if out, err := Command(context.Background(), ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var ln net.Listener
	if err := Do(ns, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return }); err != nil {
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
	sleeper := Command(context.Background(), ns, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	out, err := Command(context.Background(), ns, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(ln.Addr().String(), ":", "/", 1)+"; head -1 <&3").Output()
	if err != nil || string(out) != "inside\n" {
		t.Fatalf("from inside the namespace: %v %q", err, out)
	}
	if err := Delete(ns); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Delete left a process running in the namespace")
	}
	if err := Delete(ns); err != nil {
		t.Errorf("deleting a deleted namespace: %v", err)
	}
}
