package relay

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/internal/smtptest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/prometheus/client_golang/prometheus"
)

// TestLeaseKeptWhileSending runs two relays on one Redis against an
// upstream that takes several lease ttls to answer each message, with a
// batch of answers leased at once: each answer must reach the upstream
// exactly once, because the worker holding it keeps extending its lease
// while it sends, and while the answer waits its turn in the batch.
func TestLeaseKeptWhileSending(t *testing.T) {
	rs := redistest.Start(t)
	up := smtptest.Start(t, smtptest.Options{DataDelay: 700 * time.Millisecond})
	store, err := redisstore.New(rs.Client(), redisstore.Options{}) // the real clock: leases expire
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(up.Addr)
	cfg.Delivery.Workers = 1
	cfg.Delivery.LeaseBatch = 3
	cfg.Delivery.LeaseTTL = 300 * time.Millisecond

	var relays []*Relay
	for i := range 2 {
		r, err := New(cfg, store, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-r.Ready()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay %d: %v", i, err)
			}
			if n := counterValue(r.metrics.Panics.WithLabelValues("delivery")); n != 0 {
				t.Errorf("relay %d recovered %v panics", i, n)
			}
		})
		relays = append(relays, r)
	}
	const n = 4
	var ids []string
	for range n {
		ids = append(ids, mustSubmit(t, relays[0].Addr().String(), []string{"ok@example.com"}, message()))
	}
	msgs := up.WaitMessages(t, n, 30*time.Second)
	time.Sleep(time.Second) // a second copy, if any, would arrive now
	seen := map[string]int{}
	for _, m := range up.Messages() {
		for _, id := range ids {
			if strings.Contains(string(m.Data), "X-Answer-Relay-ID: "+id) {
				seen[id]++
			}
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("answer %s reached the upstream %d times, want once (%d messages in all)", id, seen[id], len(msgs))
		}
		a, err := store.Get(context.Background(), id)
		if err != nil || a.Status != outbox.StatusSent || len(a.Attempts) != 1 {
			t.Errorf("answer %s: %v, status %v, %d attempts; want sent after one attempt", id, err, a.Status, len(a.Attempts))
		}
	}
}
