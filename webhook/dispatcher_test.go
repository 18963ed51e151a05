package webhook_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/webhook"
)

// TestReceiverDownThenUp: while the receiver refuses connections events
// pile up and are retried; once it is back every event arrives, in order
// per answer, each verified by the Standard Webhooks library.
func TestReceiverDownThenUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.down()
		r := start(t, testConfig(rcv.URL()), st, clk)
		ids := produce(t, st, clk, 20, true)
		waitFor(t, 10*time.Second, "retries while the receiver is down", func() bool {
			return r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "retry"}) >= 40
		})
		if n := r.metric(t, "answer_relay_webhook_backlog", nil); n != 20 {
			t.Errorf("backlog %v while down, want 20 answers", n)
		}
		rcv.up()
		waitFor(t, 20*time.Second, "every event delivered", func() bool { return rcv.deliveredAll(ids, 4) })
		rcv.checkOrder(t, ids, fullTypes)
		waitBacklogEmpty(t, st)
		if n := r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "success"}); n != 80 {
			t.Errorf("%v successful deliveries, want 80", n)
		}
		if dl := deadLetters(t, st); len(dl) != 0 {
			t.Errorf("dead letters %v, want none", dl)
		}
		// The payload of ticket.reopen carries the references, the report
		// summary and the API link.
		c := rcv.callsOf(outbox.EventID(ids[3], 4))[0].Body
		if c.Data.TicketID != "T-3" || c.Data.AnswerRef != "A-3" || c.Data.Report == nil || c.Data.Report.StatusCode != "5.1.1" ||
			c.Data.ReportURL != "https://relay.example.com/api/v1/answers/"+ids[3]+"/report" || c.Data.Reason != "userunknown" {
			t.Errorf("ticket.reopen data %+v", c.Data)
		}
	})
}

// TestServerErrorThenOK: a 500 is retried and the retry gets through.
func TestServerErrorThenOK(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.N == 0 {
				return reply{Status: 500}
			}
			return reply{Status: 200}
		})
		r := start(t, testConfig(rcv.URL()), st, clk)
		ids := produce(t, st, clk, 5, true)
		waitFor(t, 10*time.Second, "every event delivered", func() bool { return rcv.deliveredAll(ids, 4) })
		rcv.checkOrder(t, ids, fullTypes)
		for _, id := range ids {
			for seq := int64(1); seq <= 4; seq++ {
				if n := rcv.count(outbox.EventID(id, seq)); n != 2 {
					t.Errorf("%s posted %d times, want 2 (500, then 200)", outbox.EventID(id, seq), n)
				}
			}
		}
		if n := r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "retry"}); n != 20 {
			t.Errorf("%v retries, want 20", n)
		}
	})
}

// TestRetryAfter: a 429 with Retry-After: 3600 is not retried before an
// hour has passed (on the test clock), although the backoff alone would
// retry after 20 ms.
func TestRetryAfter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.N == 0 {
				return reply{Status: 429, RetryAfter: "3600"}
			}
			return reply{Status: 200}
		})
		start(t, testConfig(rcv.URL()), st, clk)
		ids := produce(t, st, clk, 1, false)
		id := outbox.EventID(ids[0], 1)
		waitFor(t, 5*time.Second, "the first post", func() bool { return rcv.count(id) == 1 })
		time.Sleep(300 * time.Millisecond) // 15 backoff periods
		if n := rcv.count(id); n != 1 {
			t.Fatalf("posted %d times before Retry-After passed", n)
		}
		clk.Advance(3599 * time.Second)
		time.Sleep(100 * time.Millisecond)
		if n := rcv.count(id); n != 1 {
			t.Fatalf("posted %d times a second before Retry-After passed", n)
		}
		clk.Advance(2 * time.Second)
		waitFor(t, 5*time.Second, "the retry", func() bool { return rcv.deliveredAll(ids, 1) })
		calls := rcv.callsOf(id)
		if gap := calls[1].At.Sub(calls[0].At); gap < time.Hour {
			t.Errorf("retried after %s, want at least the hour of Retry-After", gap)
		}
	})
}

// TestGoneDisablesEndpoint: a 410 disables the endpoint for every replica;
// its events are dead-lettered without a request until an operator enables
// it, and the dead letters can then be replayed.
func TestGoneDisablesEndpoint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(call) reply { return reply{Status: 410} })
		r := start(t, testConfig(rcv.URL()), st, clk)
		ids := produce(t, st, clk, 1, true)
		waitBacklogEmpty(t, st)
		if off, err := st.EndpointDisabled(ctx, webhook.DefaultEndpoint); err != nil || !off {
			t.Fatalf("EndpointDisabled = %v, %v; want true", off, err)
		}
		ids = append(ids, produce(t, st, clk, 1, true)...)
		waitBacklogEmpty(t, st)
		if n := rcv.requests(); n != 1 {
			t.Errorf("%d requests, want 1: after the 410 nothing more is posted", n)
		}
		dls := deadLetters(t, st)
		if len(dls) != 8 {
			t.Fatalf("%d dead letters, want all 8 events", len(dls))
		}
		if n := r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "disabled"}); n != 8 {
			t.Errorf("%v deliveries with outcome disabled, want 8", n)
		}
		if n := r.metric(t, "answer_relay_webhook_dead_letters_total", nil); n != 8 {
			t.Errorf("dead_letters_total %v, want 8", n)
		}
		eps, err := r.d.Endpoints(ctx)
		if err != nil || len(eps) != 1 || !eps[0].Disabled {
			t.Errorf("Endpoints = %+v, %v; want default disabled", eps, err)
		}

		// While disabled, a replay is refused and the dead letter stays.
		if err := r.d.Replay(ctx, dls[0].ID); !errors.Is(err, webhook.ErrEndpointDisabled) {
			t.Errorf("Replay while disabled: %v, want ErrEndpointDisabled", err)
		}
		if n := len(deadLetters(t, st)); n != 8 {
			t.Errorf("%d dead letters after a refused replay, want 8", n)
		}

		// The operator enables it; replays go out and new events flow.
		rcv.setReply(func(call) reply { return reply{Status: 200} })
		if err := r.d.SetEndpointEnabled(ctx, webhook.DefaultEndpoint, true); err != nil {
			t.Fatal(err)
		}
		if off, _ := st.EndpointDisabled(ctx, webhook.DefaultEndpoint); off {
			t.Fatal("still disabled after SetEndpointEnabled")
		}
		for _, id := range ids {
			for seq := int64(1); seq <= 4; seq++ {
				if err := r.d.Replay(ctx, outbox.DeadLetterID(outbox.EventID(id, seq), webhook.DefaultEndpoint)); err != nil {
					t.Errorf("Replay: %v", err)
				}
			}
		}
		if !rcv.deliveredAll(ids, 4) {
			t.Error("replayed events did not all arrive")
		}
		if n := len(deadLetters(t, st)); n != 0 {
			t.Errorf("%d dead letters after replaying all, want 0", n)
		}
		if err := r.d.Replay(ctx, dls[0].ID); !errors.Is(err, outbox.ErrNotFound) {
			t.Errorf("second Replay of one dead letter: %v, want ErrNotFound", err)
		}
		more := produce(t, st, clk, 1, false)
		waitFor(t, 5*time.Second, "a new event after re-enabling", func() bool { return rcv.deliveredAll(more, 1) })
	})
}

// TestReplayFailurePutsBack: a replay the endpoint does not take leaves
// the dead letter in place, with one more attempt and the new reason.
func TestReplayFailurePutsBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(call) reply { return reply{Status: 422} })
		r := start(t, testConfig(rcv.URL()), st, clk)
		produce(t, st, clk, 1, false)
		waitBacklogEmpty(t, st)
		dls := deadLetters(t, st)
		if len(dls) != 1 || !strings.Contains(dls[0].Reason, "HTTP 422") || dls[0].Attempts != 1 {
			t.Fatalf("dead letters %+v, want one for the 422", dls)
		}
		rcv.setReply(func(call) reply { return reply{Status: 503} })
		if err := r.d.Replay(ctx, dls[0].ID); !errors.Is(err, webhook.ErrDeliveryFailed) {
			t.Errorf("Replay: %v, want ErrDeliveryFailed", err)
		}
		after := deadLetters(t, st)
		if len(after) != 1 || after[0].Attempts != 2 || !strings.Contains(after[0].Reason, "HTTP 503") {
			t.Errorf("dead letters after a failed replay %+v, want it back with 2 attempts and the 503", after)
		}
	})
}

// TestSlowReceiverTimesOut: a receiver slower than the endpoint's timeout
// counts as a failure; the retry gets through.
func TestSlowReceiverTimesOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.N == 0 {
				return reply{Status: 200, Hold: 5 * time.Second}
			}
			return reply{Status: 200}
		})
		cfg := testConfig(rcv.URL())
		cfg.Timeout = 200 * time.Millisecond
		// Give the receiver time to notice the abandoned request before
		// the retry comes.
		cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 200*time.Millisecond
		r := start(t, cfg, st, clk)
		ids := produce(t, st, clk, 2, true)
		waitFor(t, 10*time.Second, "every event delivered", func() bool { return rcv.deliveredAll(ids, 4) })
		rcv.checkOrder(t, ids, fullTypes)
		if n := r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "retry"}); n != 8 {
			t.Errorf("%v retries, want 8 (one timeout per event)", n)
		}
	})
}

// TestPermanentRefusal: a 4xx other than 408, 410, 429 dead-letters that
// event at once; the answer's later events still go out, in order.
func TestPermanentRefusal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.Type == outbox.EventSent {
				return reply{Status: 400}
			}
			return reply{Status: 200}
		})
		start(t, testConfig(rcv.URL()), st, clk)
		ids := produce(t, st, clk, 3, true)
		waitBacklogEmpty(t, st)
		for _, id := range ids {
			if n := rcv.count(outbox.EventID(id, 2)); n != 1 {
				t.Errorf("the refused event was posted %d times, want once", n)
			}
		}
		rcv.mu.Lock()
		for _, id := range ids {
			if got := rcv.order[id]; len(got) != 3 || got[1] != outbox.EventID(id, 3) || got[2] != outbox.EventID(id, 4) {
				t.Errorf("answer %s: delivered %v, want seq 1, 3, 4", id, got)
			}
		}
		rcv.mu.Unlock()
		dls := deadLetters(t, st)
		if len(dls) != 3 {
			t.Fatalf("%d dead letters, want 3", len(dls))
		}
		for _, d := range dls {
			if d.Event.Type != outbox.EventSent || d.Endpoint != webhook.DefaultEndpoint || !strings.HasPrefix(d.Reason, "HTTP 400") {
				t.Errorf("dead letter %+v", d)
			}
		}
	})
}

// TestMaxAge: an event that keeps failing is dead-lettered once max_age
// has passed since its first attempt, and the answer's next event follows.
func TestMaxAge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, _ := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.Seq == 1 {
				return reply{Status: 503}
			}
			return reply{Status: 200}
		})
		rcv.lax.Store(true) // seq 1 is given up, never taken
		cfg := testConfig(rcv.URL())
		cfg.MaxAge = time.Hour
		start(t, cfg, st, clk)
		ids := produce(t, st, clk, 1, true)
		first := outbox.EventID(ids[0], 1)
		waitFor(t, 5*time.Second, "a few retries", func() bool { return rcv.count(first) >= 3 })
		if n := len(deadLetters(t, st)); n != 0 {
			t.Fatalf("%d dead letters before max_age", n)
		}
		clk.Advance(time.Hour)
		waitFor(t, 5*time.Second, "the later events", func() bool {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			return len(rcv.order[ids[0]]) == 3
		})
		rcv.mu.Lock()
		if got, want := rcv.order[ids[0]], []string{outbox.EventID(ids[0], 2), outbox.EventID(ids[0], 3), outbox.EventID(ids[0], 4)}; !slices.Equal(got, want) {
			t.Errorf("delivered %v, want %v", got, want)
		}
		seen2 := false
		for _, c := range rcv.calls {
			seen2 = seen2 || c.Seq == 2
			if seen2 && c.Seq == 1 {
				t.Errorf("seq 1 posted again after seq 2")
			}
		}
		rcv.mu.Unlock()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Event.ID != first || !strings.Contains(dls[0].Reason, "gave up after") || !strings.Contains(dls[0].Reason, "HTTP 503") {
			t.Errorf("dead letters %+v, want the first event, given up", dls)
		}
	})
}

// TestTwoDispatchers: two replicas sharing one store (on Redis, two
// clients) deliver every event, never the same event at the same time, and
// keep per-answer order. The receiver is a little slow and fails sometimes,
// so claims, retries and acks of both interleave.
func TestTwoDispatchers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, replica := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(1, 2))
		rcv.setReply(func(c call) reply {
			mu.Lock()
			defer mu.Unlock()
			hold := time.Duration(rng.IntN(3000)) * time.Microsecond
			if rng.IntN(10) == 0 {
				return reply{Status: 500, Hold: hold}
			}
			return reply{Status: 200, Hold: hold}
		})
		cfg := testConfig(rcv.URL())
		r1 := start(t, cfg, st, clk)
		r2 := start(t, cfg, replica(false), clk)
		ids := produce(t, st, clk, 40, true)
		waitFor(t, 30*time.Second, "every event delivered", func() bool { return rcv.deliveredAll(ids, 4) })
		rcv.checkOrder(t, ids, fullTypes)
		waitBacklogEmpty(t, st)
		ok1 := r1.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "success"})
		ok2 := r2.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"outcome": "success"})
		t.Logf("replica 1 delivered %v, replica 2 delivered %v", ok1, ok2)
		if ok1+ok2 != 160 {
			t.Errorf("%v successful deliveries in all, want 160", ok1+ok2)
		}
	})
}

// TestKilledMidDelivery: a dispatcher stopped while the receiver holds its
// request records nothing; after the claim lapses a new dispatcher (a
// restarted process, a new store handle) delivers the event, and only then.
func TestKilledMidDelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{}
		st, reopen := b.open(t, clk.Now)
		rcv := newReceiver(t, clk)
		rcv.setReply(func(c call) reply {
			if c.N == 0 && c.Seq == 1 {
				return reply{Status: 200, Hold: time.Minute} // until the client goes
			}
			return reply{Status: 200}
		})
		cfg := testConfig(rcv.URL())
		r := start(t, cfg, st, clk)
		ids := produce(t, st, clk, 1, true)
		first := outbox.EventID(ids[0], 1)
		waitFor(t, 5*time.Second, "the first post", func() bool { return rcv.count(first) == 1 })
		r.stop(t)
		waitFor(t, 5*time.Second, "the receiver to see the client go", func() bool {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			return rcv.inflight[first] == 0
		})

		st2 := reopen(true)
		start(t, cfg, st2, clk)
		time.Sleep(200 * time.Millisecond)
		if n := rcv.count(first); n != 1 {
			t.Fatalf("posted again %d times before the claim lapsed", n-1)
		}
		clk.Advance(cfg.ClaimTTL)
		waitFor(t, 10*time.Second, "every event delivered after restart", func() bool { return rcv.deliveredAll(ids, 4) })
		rcv.checkOrder(t, ids, fullTypes)
		waitBacklogEmpty(t, st2)
	})
}

// TestReopenURL: with reopen_url, ticket.reopen goes there and only there,
// after the answer's earlier events reached url.
func TestReopenURL(t *testing.T) {
	clk := &clock{}
	st, _ := backends[0].open(t, clk.Now)
	main, reopen := newReceiver(t, clk), newReceiver(t, clk)
	reopen.lax.Store(true) // it sees seq 4 only; the order is checked below
	cfg := testConfig(main.URL())
	cfg.ReopenURL = reopen.URL()
	start(t, cfg, st, clk)
	ids := produce(t, st, clk, 3, true)
	waitBacklogEmpty(t, st)
	main.checkOrder(t, ids, fullTypes[:3])
	for _, id := range ids {
		if n := main.count(outbox.EventID(id, 4)); n != 0 {
			t.Errorf("url got ticket.reopen %d times", n)
		}
		calls := reopen.callsOf(outbox.EventID(id, 4))
		if len(calls) != 1 || calls[0].Type != outbox.EventTicketReopen {
			t.Fatalf("reopen_url got %+v, want one ticket.reopen", calls)
		}
		if last := main.callsOf(outbox.EventID(id, 3)); len(last) == 0 || last[0].At.After(calls[0].At) {
			t.Errorf("ticket.reopen of %s arrived before its answer.not_delivered", id)
		}
	}
	if n := reopen.requests(); n != 3 {
		t.Errorf("reopen_url got %d requests, want 3", n)
	}
}

// TestMetrics: the series exist at zero from the start, and the backlog
// gauges follow the store at scrape time.
func TestMetrics(t *testing.T) {
	clk := &clock{}
	st, _ := backends[1].open(t, clk.Now)
	rcv := newReceiver(t, clk)
	rcv.down()
	r := start(t, testConfig(rcv.URL()), st, clk)
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "answer_relay_webhook_deliveries_total" && len(mf.GetMetric()) != len(outbox.EventTypes)*4 {
			t.Errorf("%d delivery series at start, want %d", len(mf.GetMetric()), len(outbox.EventTypes)*4)
		}
	}
	if n := r.metric(t, "answer_relay_webhook_backlog", nil); n != 0 {
		t.Errorf("backlog %v before any event", n)
	}
	produce(t, st, clk, 3, false)
	clk.Advance(10 * time.Second)
	if n := r.metric(t, "answer_relay_webhook_backlog", nil); n != 3 {
		t.Errorf("backlog %v, want 3", n)
	}
	if age := r.metric(t, "answer_relay_webhook_oldest_pending_age_seconds", nil); age < 10 || age > 60 {
		t.Errorf("oldest pending age %vs, want about 10s", age)
	}
	rcv.up()
	waitBacklogEmpty(t, st)
	if n := r.metric(t, "answer_relay_webhook_backlog", nil); n != 0 {
		t.Errorf("backlog %v after delivery, want 0", n)
	}
	if age := r.metric(t, "answer_relay_webhook_oldest_pending_age_seconds", nil); age != 0 {
		t.Errorf("oldest pending age %v after delivery, want 0", age)
	}
	if n := r.metric(t, "answer_relay_webhook_delivery_duration_seconds", nil); n < 3 {
		t.Errorf("%v POSTs timed, want at least 3", n)
	}
	// At least 3: the test moves the fake clock 10 s while a claim (ttl
	// 2 s) may be in flight, and a lapsed claim is delivered again — the
	// at-least-once the contract promises, counted as another success.
	if n := r.metric(t, "answer_relay_webhook_deliveries_total", map[string]string{"event": "answer.scheduled", "outcome": "success"}); n < 3 || n > 6 {
		t.Errorf("%v answer.scheduled successes, want 3 (up to 6 with lapsed claims)", n)
	}
}
