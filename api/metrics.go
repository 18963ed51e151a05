package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Label values of answer_relay_api_auth_failures_total{reason}.
const (
	authMissing   = "missing"   // no bearer token
	authInvalid   = "invalid"   // a token no role has
	authForbidden = "forbidden" // a valid token of a role without access
)

// statusClasses are the values of the code label: "2xx", "3xx", "4xx",
// "5xx".
var statusClasses = []string{"2xx", "3xx", "4xx", "5xx"}

func statusClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return "4xx"
	case code >= 300:
		return "3xx"
	}
	return "2xx"
}

// Metrics are the API's own Prometheus metrics.
type Metrics struct {
	// requests counts requests by route (the registered path template,
	// or "unmatched") and code class (2xx, 3xx, 4xx, 5xx).
	requests *prometheus.CounterVec
	// duration observes request latency by route.
	duration *prometheus.HistogramVec
	// authFailures counts refused requests by reason (missing, invalid,
	// forbidden).
	authFailures *prometheus.CounterVec
	// panics counts recovered panics.
	panics prometheus.Counter
}

// NewMetrics creates the API's metrics and registers them with reg (nil:
// not registered). Series of every route are created at zero by New.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_api_requests_total",
			Help: "HTTP API requests by route and status code class.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "answer_relay_api_request_duration_seconds",
			Help:    "HTTP API request latency by route.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_api_auth_failures_total",
			Help: "HTTP API requests refused for authentication or authorisation, by reason (missing, invalid, forbidden).",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_api_panics_total",
			Help: "Panics recovered in HTTP API handlers.",
		}),
	}
	for _, r := range []string{authMissing, authInvalid, authForbidden} {
		m.authFailures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.authFailures, m.panics)
	}
	return m
}

// initRoute creates the series of one route at zero.
func (m *Metrics) initRoute(route string) {
	for _, c := range statusClasses {
		m.requests.WithLabelValues(route, c)
	}
	m.duration.WithLabelValues(route)
}
