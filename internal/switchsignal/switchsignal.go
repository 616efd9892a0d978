// Package switchsignal is a signaling server for tests of what clients do
// when theirs goes away: it can be restarted, and turned into one that
// refuses every key, as a server that bans a key does.
package switchsignal

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"

	"kin/signal"
)

// Refusal is the reason the refusing server gives.
const Refusal = "this key is banned here"

// Server is a real signaling server behind one URL, which can be swapped.
type Server struct {
	URL string // ws://
	hs  *httptest.Server
	cur atomic.Pointer[signal.Server] // nil: refuse
}

// New starts a real signaling server on loopback.
func New() *Server {
	s := &Server{}
	s.cur.Store(signal.NewServer(signal.ServerConfig{}))
	s.hs = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = "ws" + strings.TrimPrefix(s.hs.URL, "http")
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if srv := s.cur.Load(); srv != nil {
		srv.ServeHTTP(w, r)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	b, _ := json.Marshal(signal.Message{V: signal.Version, Type: signal.TypeError, Code: signal.CodeAuth, Reason: Refusal})
	ws.Write(r.Context(), websocket.MessageText, b)
	ws.Close(websocket.StatusPolicyViolation, "banned")
}

// Restart stops the running server (its clients are told to go and come
// back) and puts a new one in its place.
func (s *Server) Restart() { s.swap(signal.NewServer(signal.ServerConfig{})) }

// Refuse stops the running server; from now on every key is refused.
func (s *Server) Refuse() { s.swap(nil) }

func (s *Server) swap(next *signal.Server) {
	if old := s.cur.Swap(next); old != nil {
		old.Close()
	}
}

// Close stops it all.
func (s *Server) Close() {
	s.swap(nil)
	s.hs.Close()
}
