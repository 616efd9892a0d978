// Package memsignal is an in-memory signaling server for tests: it routes
// messages between endpoints by peer ID like the real one, answers
// "offline" for unknown peers, and can be told to lie.
package memsignal

import (
	"context"
	"sync"

	"kin/keys"
	"kin/signal"
)

// Router routes messages between its endpoints.
type Router struct {
	mu       sync.Mutex
	boxes    map[keys.PeerID]chan signal.Message
	redirect map[keys.PeerID]keys.PeerID // to -> who really gets it
	pretend  map[keys.PeerID]keys.PeerID // from -> who it claims to be
}

// New makes an empty router.
func New() *Router {
	return &Router{boxes: map[keys.PeerID]chan signal.Message{},
		redirect: map[keys.PeerID]keys.PeerID{}, pretend: map[keys.PeerID]keys.PeerID{}}
}

// Impersonate makes the router lie as a malicious server would: messages
// for victim go to impostor, and the impostor's replies claim to be victim.
func (r *Router) Impersonate(victim, impostor keys.PeerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.redirect[victim] = impostor
	r.pretend[impostor] = victim
}

// Endpoint registers id and returns its side of the router; it
// implements transport.Signaler.
func (r *Router) Endpoint(id keys.PeerID) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.boxes[id] = make(chan signal.Message, 1024)
	return &Endpoint{r: r, id: id}
}

// Endpoint is one registered peer.
type Endpoint struct {
	r  *Router
	id keys.PeerID
}

// Send routes m as the real server does: From is set by the router.
func (e *Endpoint) Send(ctx context.Context, m signal.Message) error {
	e.r.mu.Lock()
	m.V, m.From = signal.Version, e.id
	if as, ok := e.r.pretend[e.id]; ok {
		m.From = as
	}
	to := m.To
	if real, ok := e.r.redirect[to]; ok {
		to = real
	}
	box, self := e.r.boxes[to], e.r.boxes[e.id]
	e.r.mu.Unlock()
	if box == nil {
		if m.Type != signal.TypeBye {
			self <- signal.Message{V: signal.Version, Type: signal.TypeError, Code: signal.CodeOffline, To: m.To, Session: m.Session}
		}
		return nil
	}
	select {
	case box <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Recv returns the next message for this endpoint.
func (e *Endpoint) Recv(ctx context.Context) (signal.Message, error) {
	e.r.mu.Lock()
	box := e.r.boxes[e.id]
	e.r.mu.Unlock()
	select {
	case m := <-box:
		return m, nil
	case <-ctx.Done():
		return signal.Message{}, ctx.Err()
	}
}
