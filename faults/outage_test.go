//go:build linux

package faults

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

// finalType is the last event an answer of the load gets: answer.sent, or
// ticket.reopen after answer.not_delivered (every answer carries a ticket).
func finalType(es []hookEvent) bool {
	for _, e := range es {
		if e.Type == "answer.sent" || e.Type == "ticket.reopen" {
			return true
		}
	}
	return false
}

// inOrder checks one answer's webhooks: every sequence number from 1 to the
// highest arrived, each for the first time only after all lower ones
// (at-least-once may repeat an event, never reorder). It returns the types
// in sequence order and the number of repeats.
func inOrder(es []hookEvent) (types []string, repeats int, ok bool) {
	seen := map[int64]bool{}
	var max int64
	for _, e := range es {
		if seen[e.Seq] {
			repeats++
			continue
		}
		if e.Seq != max+1 {
			return nil, repeats, false
		}
		seen[e.Seq] = true
		max = e.Seq
		types = append(types, e.Type)
	}
	return types, repeats, true
}

// TestUpstreamOutage is case 3: the upstream goes away for longer than
// delay_after, then comes back. Answers queued meanwhile drain, and each one
// queued past the threshold gets answer.delayed exactly once, then
// answer.sent; answers sent before the outage are never delayed.
func TestUpstreamOutage(t *testing.T) {
	rs := redistest.Start(t, redistest.WithAOF())
	sk := startSink(t)
	hk := startHooks(t)
	const delayAfter = 2 * time.Second
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: rs.URL(), DelayAfter: delayAfter,
		RetrySchedule: []string{"500ms"}, WebhookURL: hk.URL(), WebhookSecret: hk.Secret})
	ctx := context.Background()

	before := drive(ctx, t, loadSpec{Addrs: []string{rp.SMTP}, Answers: 100, Sessions: 4, Rate: 200})
	waitFor(t, 30*time.Second, "the answers before the outage at the upstream", func() bool { return sk.count() >= 100 })

	sk.down()
	down := time.Now()
	n := scaled(300, 2000)
	during := drive(ctx, t, loadSpec{Addrs: []string{rp.SMTP}, Answers: n, Sessions: 8, Rate: 200, RejectEvery: 50})
	// Every answer of the outage waits past delay_after; the sweeper flags
	// it and the webhook tells the helpdesk, while the upstream is still
	// away.
	waitFor(t, 2*time.Minute, "answer.delayed for every answer queued during the outage", func() bool {
		ev := hk.events()
		for id := range during.Accepted {
			found := false
			for _, e := range ev[id] {
				found = found || e.Type == "answer.delayed"
			}
			if !found {
				return false
			}
		}
		return true
	})
	sk.up()
	outage := time.Since(down)

	l := account(t, during, sk, []*relayProc{rp}, 2*time.Minute)
	l.check(t, []*relayProc{rp})
	lb := account(t, before, sk, []*relayProc{rp}, 30*time.Second)
	lb.check(t, []*relayProc{rp})
	waitFor(t, time.Minute, "the final webhook of every answer", func() bool {
		ev := hk.events()
		for id := range during.Accepted {
			if !finalType(ev[id]) {
				return false
			}
		}
		return true
	})

	ev := hk.events()
	delayedOnce, early, repeats := 0, 0, 0
	for id, a := range during.Accepted {
		types, rep, ok := inOrder(ev[id])
		repeats += rep
		if !ok {
			t.Errorf("answer %s: webhooks out of order: %+v", id, ev[id])
			continue
		}
		nDelayed := 0
		for _, e := range ev[id] {
			if e.Type == "answer.delayed" {
				if e.At.Sub(a.Dot) < delayAfter {
					early++
					t.Errorf("answer %s: answer.delayed %s after acceptance, before delay_after %s", id, e.At.Sub(a.Dot), delayAfter)
				}
			}
		}
		for _, ty := range types {
			if ty == "answer.delayed" {
				nDelayed++
			}
		}
		if nDelayed != 1 || types[0] != "answer.scheduled" || types[1] != "answer.delayed" {
			t.Errorf("answer %s: events %v, want scheduled, delayed (once), then sent or not_delivered", id, types)
			continue
		}
		delayedOnce++
	}
	for id := range before.Accepted {
		for _, e := range ev[id] {
			if e.Type == "answer.delayed" {
				t.Errorf("answer %s sent before the outage was delayed", id)
			}
		}
	}
	figures(t, "answers_before", before.count(), "answers_during_outage", l.Accepted, "outage", outage.Round(100*time.Millisecond),
		"delay_after", delayAfter, "delayed_once", delayedOnce, "delayed_early", early, "webhook_repeats", repeats,
		"at_sink", l.AtSink+lb.AtSink, "not_delivered", l.NotDelivered, "lost", l.Lost+lb.Lost, "duplicates", l.Duplicates+lb.Duplicates)
}

// TestWebhookReceiverOutage is case 4: the helpdesk's webhook receiver goes
// away mid-run and comes back. Every event is delivered in the end, each
// answer's in sequence order.
func TestWebhookReceiverOutage(t *testing.T) {
	rs := redistest.Start(t, redistest.WithAOF())
	sk := startSink(t)
	hk := startHooks(t)
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: rs.URL(), WebhookURL: hk.URL(), WebhookSecret: hk.Secret})

	n := scaled(900, 5000)
	rate := scaled(100, 200)
	outage := time.Duration(scaled(5, 15)) * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		sleepCtx(ctx, time.Duration(n/rate)*time.Second/3)
		hk.down()
		sleepCtx(ctx, outage)
		hk.up()
	})
	res := drive(ctx, t, loadSpec{Addrs: []string{rp.SMTP}, Answers: n, Sessions: 8, Rate: rate, RejectEvery: 50})
	wg.Wait()

	l := account(t, res, sk, []*relayProc{rp}, 2*time.Minute)
	l.check(t, []*relayProc{rp})
	waitFor(t, 3*time.Minute, "every answer's final webhook", func() bool {
		ev := hk.events()
		for id := range res.Accepted {
			if !finalType(ev[id]) {
				return false
			}
		}
		return true
	})
	ev := hk.events()
	events, repeats, bad := 0, 0, 0
	for id := range res.Accepted {
		types, rep, ok := inOrder(ev[id])
		repeats += rep
		events += len(types)
		want := []string{"answer.scheduled", "answer.sent"}
		if len(types) > 1 && types[1] == "answer.not_delivered" {
			want = []string{"answer.scheduled", "answer.not_delivered", "ticket.reopen"}
		}
		if !ok || !equal(types, want) {
			bad++
			if bad < 10 {
				t.Errorf("answer %s: webhooks %+v, want %v in order", id, ev[id], want)
			}
		}
	}
	hk.mu.Lock()
	badSig := hk.bad
	hk.mu.Unlock()
	if badSig > 0 {
		t.Errorf("%d webhooks failed signature verification", badSig)
	}
	figures(t, "answers", l.Accepted, "receiver_outage", outage, "events_delivered", events, "events_repeated", repeats,
		"out_of_order_or_missing", bad, "at_sink", l.AtSink, "not_delivered", l.NotDelivered, "lost", l.Lost, "duplicates", l.Duplicates)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
