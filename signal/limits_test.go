package signal

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// metric reads one value from the server's Prometheus endpoint.
func metric(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func refused(t *testing.T, s *Server, reason string) float64 {
	return metric(t, s, `kin_signal_refused_total{reason="`+reason+`"}`)
}

func TestMaxConnsIsCounted(t *testing.T) {
	e := newEnv(t, ServerConfig{MaxConns: 2})
	e.client(ident(t))
	rawConn(t, e)
	ws, _, err := websocket.Dial(e.ctx, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if m, _ := readMessage(e.ctx, ws); m.Code != CodeFull {
		t.Errorf("3rd connection: %+v", m)
	}
	if n := refused(t, e.srv, RefusedFull); n != 1 {
		t.Errorf("server-full counted %v times", n)
	}
}

func TestRegisterRatePerAddress(t *testing.T) {
	e := newEnv(t, ServerConfig{RegisterRate: 0.01, RegisterBurst: 2})
	dial := func(from string) Message {
		h := http.Header{}
		if from != "" {
			h.Set("X-Forwarded-For", from) // as a reverse proxy on this machine would
		}
		ws, _, err := websocket.Dial(e.ctx, e.url, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		m, _ := readMessage(e.ctx, ws)
		return m
	}
	for i := range 2 {
		if m := dial("198.51.100.1"); m.Type != TypeChallenge {
			t.Fatalf("connection %d: %+v", i, m)
		}
	}
	if m := dial("198.51.100.1"); m.Code != CodeRateLimit {
		t.Fatalf("3rd connection from one address: %+v", m)
	}
	if m := dial("198.51.100.2"); m.Type != TypeChallenge {
		t.Fatalf("another address was limited too: %+v", m)
	}
	if n := refused(t, e.srv, RefusedRegisterRate); n != 1 {
		t.Errorf("register-rate counted %v times", n)
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	e := newEnv(t, ServerConfig{IdleTimeout: 300 * time.Millisecond})
	ws, _, err := websocket.Dial(e.ctx, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// This client never reads, so it never answers a ping.
	deadline := time.Now().Add(5 * time.Second)
	for refused(t, e.srv, RefusedIdle) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection was not closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	if metric(t, e.srv, "kin_signal_connections") != 0 {
		for metric(t, e.srv, "kin_signal_connections") != 0 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if ctx.Err() != nil {
			t.Error("the idle connection is still counted")
		}
	}
}
