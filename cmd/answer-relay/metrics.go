package main

import (
	"context"
	"log/slog"
	"runtime"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry returns the process's Prometheus registry: Go and process
// collectors, build info, and the store's queue computed at scrape time.
func newRegistry(store outbox.Store, clock outbox.Clock) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "answer_relay_build_info",
			Help:        "Build information; always 1.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		&queueCollector{store: store, clock: clock},
	)
	return reg
}

// newEventObserver returns the observer of every state change the store
// writes: one log line per event, with the answer id, and a counter per
// event type (answer.<status> and ticket.reopen).
func newEventObserver(reg prometheus.Registerer, logger *slog.Logger) outbox.Observer {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "answer_relay_answer_events_total",
		Help: "Answer status changes and ticket reopens written, by event type (answer.scheduled, answer.sent, answer.delayed, answer.not_delivered, answer.delivered, ticket.reopen).",
	}, []string{"event"})
	for _, t := range outbox.EventTypes {
		events.WithLabelValues(string(t))
	}
	reg.MustRegister(events)
	return func(ctx context.Context, evs []outbox.Event) {
		for _, e := range evs {
			events.WithLabelValues(string(e.Type)).Inc()
			logger.LogAttrs(ctx, slog.LevelInfo, "answer "+string(e.Status),
				slog.String("answer_id", e.AnswerID), slog.String("event", string(e.Type)),
				slog.String("previous", string(e.PreviousStatus)), slog.Int64("seq", e.Seq),
				slog.String("ticket_id", e.TicketID), slog.String("reason", e.Reason))
		}
	}
}

// queueCollector reads the delivery queue and the unmatched bounces from
// the store at scrape time, so every replica reports the shared truth.
type queueCollector struct {
	store outbox.Store
	clock outbox.Clock
}

var (
	queueLengthDesc = prometheus.NewDesc("answer_relay_queue_length",
		"Answers with a recipient still waiting for the upstream.", nil, nil)
	queueOldestDesc = prometheus.NewDesc("answer_relay_queue_oldest_age_seconds",
		"Age of the oldest queued answer (since it was accepted or resent); 0 when the queue is empty.", nil, nil)
	unmatchedDesc = prometheus.NewDesc("answer_relay_bounces_unmatched",
		"Bounces kept because they matched no answer.", nil, nil)
	scrapeErrorDesc = prometheus.NewDesc("answer_relay_store_scrape_errors",
		"1 when the last scrape could not read the store, else 0.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueLengthDesc
	ch <- queueOldestDesc
	ch <- unmatchedDesc
	ch <- scrapeErrorDesc
}

// Collect implements prometheus.Collector.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed := 0.0
	if q, err := c.store.QueueStats(ctx); err == nil {
		age := 0.0
		if !q.Oldest.IsZero() {
			age = max(c.clock().Sub(q.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(queueLengthDesc, prometheus.GaugeValue, float64(q.Length))
		ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age)
	} else {
		failed = 1
	}
	if n, err := c.store.CountUnmatched(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(unmatchedDesc, prometheus.GaugeValue, float64(n))
	} else {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
}
