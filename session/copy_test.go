package session

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
)

// copyGrowing delivers every byte in order, from a real connection whose
// reads fill its buffer (so it grows) and end in small ones.
func TestCopyGrowingKeepsEveryByte(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payload := make([]byte, 8<<20+12345)
	rand.Read(payload)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for p := payload; len(p) > 0; { // writes of every size from 1 byte up
			k := min(len(p), 1+len(p)%(300<<10))
			c.Write(p[:k])
			p = p[k:]
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	n, err := copyGrowing(h, c)
	if err != nil || n != int64(len(payload)) {
		t.Fatalf("copied %d of %d bytes: %v", n, len(payload), err)
	}
	if [32]byte(h.Sum(nil)) != sha256.Sum256(payload) {
		t.Fatal("the bytes differ")
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestCopyGrowingShortWrite(t *testing.T) {
	r := io.LimitReader(rand.Reader, 1000)
	if _, err := copyGrowing(shortWriter{}, r); err != io.ErrShortWrite {
		t.Fatalf("short write: %v", err)
	}
}
