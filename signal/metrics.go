package signal

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Refusal reasons, as counted in kin_signal_refused_total.
const (
	RefusedFull         = "server-full"
	RefusedTooBig       = "too-big"
	RefusedRateLimit    = "rate-limit"
	RefusedRegisterRate = "register-rate"
	RefusedBadMessage   = "bad-message"
	RefusedAuth         = "auth"
	RefusedIdle         = "idle"
	RefusedOffline      = "offline"
	RefusedSlow         = "slow-client"
)

// metrics are a server's counters in Prometheus form. Each server has its
// own registry (no global state); Server.MetricsHandler serves it.
type metrics struct {
	reg     *prometheus.Registry
	routed  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// newMetrics registers the server's gauges and counters, and the relay's
// when stats is not nil.
func newMetrics(s *Server, stats *RelayStats) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kin_signal_messages_routed_total", Help: "Messages routed to a peer, by type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kin_signal_refused_total", Help: "Connections and messages refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{RefusedFull, RefusedTooBig, RefusedRateLimit, RefusedRegisterRate, RefusedBadMessage, RefusedAuth, RefusedIdle, RefusedOffline, RefusedSlow} {
		m.refused.WithLabelValues(r) // show zeros
	}
	m.reg.MustRegister(m.routed, m.refused,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kin_signal_peers_online", Help: "Peers registered on this instance."},
			func() float64 { return float64(s.count().peers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kin_signal_connections", Help: "Open WebSocket connections."},
			func() float64 { return float64(s.count().conns) }),
	)
	if stats != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kin_turn_allocations_total", Help: "TURN relay allocations made."},
				func() float64 { return float64(stats.Allocations.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kin_turn_relayed_bytes_total", Help: "Bytes relayed by TURN, both directions."},
				func() float64 { return float64(stats.RelayedBytes.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kin_turn_dropped_packets_total", Help: "Relayed packets dropped by the bandwidth cap."},
				func() float64 { return float64(stats.Dropped.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kin_turn_refused_peers_total", Help: "TURN permissions and relayed packets refused because the peer address is not public (or allowed with --relay-allow)."},
				func() float64 { return float64(stats.RefusedPeers.Load()) }),
		)
	}
	return m
}

// MetricsHandler serves the server's metrics in Prometheus text format.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

func (m *metrics) refuse(reason string) {
	m.refused.WithLabelValues(reason).Inc()
}

func (m *metrics) route(typ string) {
	m.routed.WithLabelValues(typ).Inc()
}
