package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the relay's Prometheus metrics (SPEC section 8).
type Metrics struct {
	// Sessions counts SMTP submission sessions (one per EHLO/HELO after
	// connect or STARTTLS).
	Sessions prometheus.Counter
	// Accepted counts messages stored and answered with 250.
	Accepted prometheus.Counter
	// Rejected counts refused submissions by reason.
	Rejected *prometheus.CounterVec
	// AuthFailures counts failed AUTH exchanges.
	AuthFailures prometheus.Counter
	// Attempts counts upstream delivery attempts by result.
	Attempts *prometheus.CounterVec
	// AttemptDuration observes each upstream attempt's wall time.
	AttemptDuration prometheus.Histogram
	// StoreErrors counts failed store calls by operation.
	StoreErrors *prometheus.CounterVec
	// Panics counts panics recovered in the relay's goroutines.
	Panics *prometheus.CounterVec
}

// Label values, closed sets.
var (
	// attempt results: every recipient sent; some recipient to retry; some
	// recipient failed for good (none to retry); the attempt failed before
	// any recipient got a reply.
	attemptResults = []string{"sent", "temporary", "permanent", "error"}
	// store operations the relay calls.
	storeOps = []string{"accept", "lease", "extend_lease", "record", "release", "body", "mark_delayed", "expire"}
	// reasons a submission was refused.
	rejectReasons = []string{"auth_required", "store", "too_large", "bad_message", "too_many_sessions", "sender_not_allowed"}
	// where a panic was recovered.
	panicSites = []string{"smtp", "delivery", "sweeper"}
)

// NewMetrics creates the relay's metrics, registered with reg (which may be
// nil, for unregistered metrics), every label value at zero.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Sessions: f.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_smtp_sessions_total",
			Help: "SMTP submission sessions started.",
		}),
		Accepted: f.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_messages_accepted_total",
			Help: "Messages stored and acknowledged with 250.",
		}),
		Rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_smtp_rejected_total",
			Help: "Submissions refused, by reason (auth_required, store, too_large, bad_message, too_many_sessions, sender_not_allowed).",
		}, []string{"reason"}),
		AuthFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_smtp_auth_failures_total",
			Help: "Failed SMTP AUTH exchanges.",
		}),
		Attempts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_upstream_attempts_total",
			Help: "Upstream delivery attempts, by result (sent, temporary, permanent, error).",
		}, []string{"result"}),
		AttemptDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "answer_relay_upstream_attempt_duration_seconds",
			Help:    "Wall time of upstream delivery attempts.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		StoreErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_store_errors_total",
			Help: "Failed store calls made by the relay, by operation.",
		}, []string{"op"}),
		Panics: f.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_relay_panics_recovered_total",
			Help: "Panics recovered in the relay's goroutines, by site (smtp, delivery, sweeper).",
		}, []string{"site"}),
	}
	for _, v := range attemptResults {
		m.Attempts.WithLabelValues(v)
	}
	for _, v := range storeOps {
		m.StoreErrors.WithLabelValues(v)
	}
	for _, v := range rejectReasons {
		m.Rejected.WithLabelValues(v)
	}
	for _, v := range panicSites {
		m.Panics.WithLabelValues(v)
	}
	return m
}
