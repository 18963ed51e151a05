package webhook

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of one delivery of an event to one endpoint, the values of the
// "outcome" label.
const (
	OutcomeSuccess    = "success"     // a 2xx reply
	OutcomeRetry      = "retry"       // network error, timeout, 5xx, 408, 429: tried again later
	OutcomeDeadLetter = "dead_letter" // another 4xx, or retries ran out
	OutcomeDisabled   = "disabled"    // 410 Gone, or the endpoint was disabled already
)

var outcomes = []string{OutcomeSuccess, OutcomeRetry, OutcomeDeadLetter, OutcomeDisabled}

// Metrics are the webhook dispatcher's Prometheus metrics.
type Metrics struct {
	// Deliveries counts deliveries of an event to an endpoint by event
	// (the closed set outbox.EventTypes) and outcome (Outcome*).
	Deliveries *prometheus.CounterVec
	// Duration is the time of one POST, from connecting to the reply.
	Duration prometheus.Histogram
	// DeadLetters counts dead letters written.
	DeadLetters prometheus.Counter
	// Panics counts panics recovered in the dispatcher's goroutines.
	Panics prometheus.Counter
	// StoreErrors counts failed store calls of the dispatcher.
	StoreErrors prometheus.Counter

	stats atomic.Pointer[statsFunc]
}

// statsFunc reads the event backlog and the time to measure its age from.
type statsFunc func(context.Context) (outbox.EventStats, time.Time, error)

// NewMetrics creates the metrics and registers them with reg (nil for
// none). The backlog gauges read the store at scrape time once a
// Dispatcher using these metrics exists; until then they are 0.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "answer_relay_webhook_deliveries_total",
			Help: "Deliveries of an event to an endpoint, by event type and outcome (success, retry, dead_letter, disabled).",
		}, []string{"event", "outcome"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "answer_relay_webhook_delivery_duration_seconds",
			Help:    "Time of one webhook POST until its reply or failure.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		DeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_webhook_dead_letters_total",
			Help: "Events dead-lettered for an endpoint after retries ran out or a permanent refusal.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_webhook_panics_total",
			Help: "Panics recovered in the webhook dispatcher.",
		}),
		StoreErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "answer_relay_webhook_store_errors_total",
			Help: "Failed store calls of the webhook dispatcher.",
		}),
	}
	for _, t := range outbox.EventTypes {
		for _, o := range outcomes {
			m.Deliveries.WithLabelValues(string(t), o)
		}
	}
	if reg != nil {
		reg.MustRegister(m.Deliveries, m.Duration, m.DeadLetters, m.Panics, m.StoreErrors, backlogCollector{m})
	}
	return m
}

// setStats sets the source of the backlog gauges.
func (m *Metrics) setStats(f statsFunc) { m.stats.Store(&f) }

var (
	backlogDesc = prometheus.NewDesc("answer_relay_webhook_backlog",
		"Answers with at least one webhook event not yet delivered to every endpoint.", nil, nil)
	oldestDesc = prometheus.NewDesc("answer_relay_webhook_oldest_pending_age_seconds",
		"Age of the oldest webhook event not yet delivered to every endpoint; 0 when none.", nil, nil)
)

// statsTimeout bounds the store call of one scrape.
const statsTimeout = 5 * time.Second

// backlogCollector reads EventStats once per scrape for both gauges. On a
// store error it reports nothing, so the scrape shows the gap instead of a
// false zero.
type backlogCollector struct{ m *Metrics }

func (c backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- oldestDesc
}

func (c backlogCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.stats.Load()
	if f == nil {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, 0)
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, 0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	st, now, err := (*f)(ctx)
	if err != nil {
		c.m.StoreErrors.Inc()
		return
	}
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(st.Pending))
	age := 0.0
	if !st.Oldest.IsZero() {
		age = max(0, now.Sub(st.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
}
