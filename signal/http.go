package signal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Handler is the server over HTTP: the WebSocket endpoint at /,
// Prometheus metrics at /metrics, and /healthz for load balancers ("ok",
// or 503 once the server is shutting down).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s)
	mux.Handle("/metrics", s.MetricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Healthy() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// shutdownTimeout bounds the HTTP shutdown after the clients are drained.
const shutdownTimeout = 2 * time.Second

// Serve serves Handler on ln (wss:// with ServerConfig.TLS) until ctx
// ends, then shuts down: it refuses new clients, tells every client to
// reconnect (elsewhere) and drains it (see Close), and stops HTTP. It
// returns nil after ctx ends, or why it could not go on serving (having
// closed the server all the same).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("signaling server: %w", err)
	case <-ctx.Done():
	}
	s.Close()
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("signaling server shutdown: %w", err)
	}
	<-errc
	return nil
}
