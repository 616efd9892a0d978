package transport

import (
	"errors"
	"io"
	"testing"
)

// Either end opens streams beside SSH's on the connection's QUIC; each
// carries bytes both ways (SHA-256), half-closes (the other end reads EOF
// and may still answer), and the main stream goes on as before.
func TestStreamsBesideTheMainOne(t *testing.T) {
	p := newPair(t)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	for _, ends := range [][2]*Conn{{d, a}, {a, d}} {
		opener, taker := ends[0], ends[1]
		s, err := opener.OpenStream(p.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("x")); err != nil { // the peer learns of a stream with its first bytes
			t.Fatal(err)
		}
		r, err := taker.AcceptStream(p.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		laneTransfer(t, s, r, 4<<20)
		laneTransfer(t, r, s, 1<<20)
		if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after CloseWrite the other end reads %d, %v; want EOF", n, err)
		}
		if _, err := r.Write([]byte("still")); err != nil {
			t.Fatalf("the other end cannot answer after a half-close: %v", err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(s, got); err != nil || string(got) != "still" {
			t.Fatalf("answer after a half-close: %q, %v", got, err)
		}
		s.Close()
		r.Close()
	}
	transfer(t, d, a, 1<<20) // the main stream still works
}

func TestNoStreamsOnTheDataChannel(t *testing.T) {
	cfg := Config{Interfaces: []string{"lo"}, Lane: LaneForceDC}
	p := newPairWith(t, cfg, cfg)
	d, a := p.connect(t)
	defer d.Close()
	defer a.Close()
	if _, err := d.OpenStream(p.ctx); !errors.Is(err, ErrNoLanes) {
		t.Errorf("open stream: %v, want ErrNoLanes", err)
	}
	if _, err := a.AcceptStream(p.ctx); !errors.Is(err, ErrNoLanes) {
		t.Errorf("accept stream: %v, want ErrNoLanes", err)
	}
}
