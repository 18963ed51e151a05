package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// parallel runs f(i) for i in [0, n) on n goroutines and waits for them.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	wg.Wait()
}

func testConcurrency(t *testing.T, open Opener) {
	t.Run("events added while the head is claimed stay behind it", func(t *testing.T) {
		// A claim and new events for the same answer racing each other:
		// the claimed head must stay claimed, however the engine batches
		// the two writes.
		h := newHarness(t, open)
		const n = 40
		ids := make([]string, n)
		for i := range ids {
			ids[i] = h.accept(spec{noAdvance: true}).ID
		}
		var mu sync.Mutex
		claimed := map[string]int{}
		parallel(3, func(w int) {
			if w == 2 { // the writer: a bounce per answer adds two events
				for _, id := range ids {
					if _, err := h.s.RecordReport(h.ctx, id, h.report("failed", rcptA), nil); err != nil {
						t.Errorf("RecordReport(%s): %v", id, err)
					}
				}
				return
			}
			for range 60 {
				cs, err := h.s.ClaimEvents(h.ctx, fmt.Sprintf("c%d", w), 8, time.Hour)
				if err != nil {
					t.Errorf("ClaimEvents: %v", err)
					return
				}
				mu.Lock()
				for _, c := range cs {
					claimed[c.Event.ID]++
				}
				mu.Unlock()
			}
		})
		for id, k := range claimed {
			if k > 1 {
				t.Errorf("event %s claimed %d times within one claim's ttl", id, k)
			}
		}
		for id := range claimed {
			if !strings.HasSuffix(id, "-1") {
				t.Errorf("event %s claimed while its answer's first event was never acked", id)
			}
		}
	})

	t.Run("two workers never hold one answer", func(t *testing.T) {
		h := newHarness(t, open)
		const n = 60
		for range n {
			h.accept(spec{noAdvance: true})
		}
		var mu sync.Mutex
		leased := map[string][]string{}
		parallel(4, func(w int) {
			owner := fmt.Sprintf("w%d", w)
			for range 100 {
				ls, err := h.s.Lease(h.ctx, owner, 4, time.Hour)
				if err != nil {
					t.Errorf("Lease: %v", err)
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					leased[l.Answer.ID] = append(leased[l.Answer.ID], owner)
				}
				mu.Unlock()
				for _, l := range ls {
					if _, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptA))); err != nil {
						t.Errorf("RecordAttempt(%s): %v", l.Answer.ID, err)
					}
				}
			}
		})
		if len(leased) != n {
			t.Errorf("%d answers leased, want %d", len(leased), n)
		}
		for id, owners := range leased {
			if len(owners) != 1 {
				t.Errorf("answer %s leased %d times: %v", id, len(owners), owners)
			}
		}
		if q := h.queueLen(); q != 0 {
			t.Errorf("queue length = %d, want 0", q)
		}
	})

	t.Run("a crashed worker's answers go to the others", func(t *testing.T) {
		h := newHarness(t, open)
		const n = 20
		for range n {
			h.accept(spec{noAdvance: true})
		}
		_, crashed := h.leaseIDs("crashed", n, time.Minute)
		if len(crashed) != n {
			t.Fatalf("leased %d, want %d", len(crashed), n)
		}
		h.clock.Advance(time.Minute)
		var mu sync.Mutex
		done := map[string]int{}
		parallel(4, func(w int) {
			for range 50 {
				ls, err := h.s.Lease(h.ctx, fmt.Sprintf("w%d", w), 3, time.Hour)
				if err != nil || len(ls) == 0 {
					return
				}
				for _, l := range ls {
					if _, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptA))); err != nil {
						t.Errorf("RecordAttempt: %v", err)
					}
					mu.Lock()
					done[l.Answer.ID]++
					mu.Unlock()
				}
			}
		})
		if len(done) != n {
			t.Errorf("%d answers picked up, want %d", len(done), n)
		}
		for _, l := range crashed {
			_, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptA)))
			wantErr(t, "RecordAttempt by the crashed worker", err, outbox.ErrLeaseLost)
		}
	})

	t.Run("the same report at once", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA))
		rep := h.report("failed", rcptA)
		errs := make([]error, 8)
		parallel(8, func(i int) { _, errs[i] = h.s.RecordReport(h.ctx, a.ID, rep, []byte("raw")) })
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, outbox.ErrDuplicate):
				t.Errorf("RecordReport: %v, want nil or ErrDuplicate", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d of 8 identical reports recorded, want 1", ok)
		}
		got := h.get(a.ID)
		if len(got.Reports) != 1 || countType(got.Events, nd) != 1 || countType(got.Events, reopen) != 1 {
			t.Errorf("after 8 identical reports: %d reports, events %v; want 1 report, one not_delivered and one reopen", len(got.Reports), eventTypes(got.Events))
		}
	})

	t.Run("different failure reports at once", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{rcpts: []string{rcptA, rcptB}})
		h.mustAttempt(a.ID, sent(rcptA), sent(rcptB))
		reps := make([]outbox.Report, 8)
		for i := range reps {
			reps[i] = h.report("failed", []string{rcptA, rcptB}[i%2])
		}
		parallel(8, func(i int) {
			if _, err := h.s.RecordReport(h.ctx, a.ID, reps[i], nil); err != nil {
				t.Errorf("RecordReport: %v", err)
			}
		})
		got := h.get(a.ID)
		if len(got.Reports) != 8 || countType(got.Events, nd) != 1 || countType(got.Events, reopen) != 1 {
			t.Errorf("after 8 failure reports: %d reports, events %v; want 8 reports, one not_delivered and one reopen", len(got.Reports), eventTypes(got.Events))
		}
	})

	t.Run("resend at once", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, perm(rcptA))
		errs := make([]error, 8)
		parallel(8, func(i int) { _, errs[i] = h.s.Resend(h.ctx, a.ID) })
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, outbox.ErrIllegalTransition):
				t.Errorf("Resend: %v, want nil or ErrIllegalTransition", err)
			}
		}
		got := h.get(a.ID)
		if ok != 1 || countType(got.Events, outbox.EventScheduled) != 2 {
			t.Errorf("%d of 8 resends succeeded, events %v; want 1 and one new answer.scheduled", ok, eventTypes(got.Events))
		}
	})

	t.Run("mark delayed races with delivery", func(t *testing.T) {
		h := newHarness(t, open)
		const n = 40
		for range n {
			h.accept(spec{noAdvance: true})
		}
		h.clock.Advance(4 * time.Hour)
		cutoff := h.clock.Now().Add(-3 * time.Hour)
		var mu sync.Mutex
		marked := 0
		parallel(6, func(w int) {
			if w < 3 {
				for range 100 {
					k, err := h.markDelayed(cutoff, 3)
					if err != nil {
						t.Errorf("MarkDelayed: %v", err)
						return
					}
					mu.Lock()
					marked += k
					mu.Unlock()
					if k == 0 {
						return
					}
				}
				return
			}
			for range 100 {
				ls, err := h.s.Lease(h.ctx, fmt.Sprintf("w%d", w), 2, time.Hour)
				if err != nil || len(ls) == 0 {
					return
				}
				for _, l := range ls {
					if _, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptA))); err != nil {
						t.Errorf("RecordAttempt: %v", err)
					}
				}
			}
		})
		p, err := h.s.List(h.ctx, outbox.Filter{Limit: 500})
		wantErr(t, "List", err, nil)
		delayed := 0
		for _, a := range p.Answers {
			checkEvents(t, a)
			if a.Status != outbox.StatusSent {
				t.Errorf("%s: %s, want sent", a.ID, a.Status)
			}
			d := countType(a.Events, outbox.EventDelayed)
			if d > 1 || countType(a.Events, outbox.EventSent) != 1 || countType(a.Events, outbox.EventScheduled) != 1 {
				t.Errorf("%s: events %v, want each at most once", a.ID, eventTypes(a.Events))
			}
			delayed += d
		}
		if len(p.Answers) != n || delayed != marked {
			t.Errorf("%d answers, %d delayed events; want %d answers and %d events (MarkDelayed's count)", len(p.Answers), delayed, n, marked)
		}
	})

	t.Run("two consumers never hold one event", func(t *testing.T) {
		h := newHarness(t, open)
		const n = 30
		for range n {
			a := h.accept(spec{noAdvance: true})
			h.mustAttempt(a.ID, sent(rcptA))
		}
		var mu sync.Mutex
		claimed := map[string][]int64{} // answer id → seqs in claim order
		parallel(4, func(w int) {
			for range 200 {
				cs, err := h.s.ClaimEvents(h.ctx, fmt.Sprintf("c%d", w), 3, time.Hour)
				if err != nil {
					t.Errorf("ClaimEvents: %v", err)
					return
				}
				if len(cs) == 0 {
					st, err := h.s.EventStats(h.ctx)
					if err != nil || st.Pending == 0 {
						return
					}
					continue // another consumer holds the rest
				}
				mu.Lock()
				for _, c := range cs {
					claimed[c.Event.AnswerID] = append(claimed[c.Event.AnswerID], c.Event.Seq)
				}
				mu.Unlock()
				for _, c := range cs {
					if err := h.s.AckEvent(h.ctx, c); err != nil {
						t.Errorf("AckEvent(%s): %v", c.Event.ID, err)
					}
				}
			}
		})
		if len(claimed) != n {
			t.Errorf("events of %d answers claimed, want %d", len(claimed), n)
		}
		for id, seqs := range claimed {
			if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
				t.Errorf("answer %s: events claimed in order %v, want [1 2] once each", id, seqs)
			}
		}
	})

	t.Run("1000 answers accepted by 8 goroutines", func(t *testing.T) {
		h := newHarness(t, open)
		const n, workers = 1000, 8
		var mu sync.Mutex
		want := map[string]bool{}
		parallel(workers, func(w int) {
			for i := range n / workers {
				a, err := outbox.NewAnswer(outbox.NewID(h.clock.Now()), "agent@helpdesk.example", []string{rcptA}, h.clock.Now())
				if err != nil {
					t.Errorf("NewAnswer: %v", err)
					return
				}
				a.SetReferences(fmt.Sprintf("T-%d", w), fmt.Sprintf("R-%d-%d", w, i))
				if err := h.s.Accept(h.ctx, a, bytes.NewReader(defaultBody(a.ID))); err != nil {
					t.Errorf("Accept: %v", err)
					return
				}
				mu.Lock()
				want[a.ID] = true
				mu.Unlock()
			}
		})
		got := h.listAll(outbox.Filter{Limit: 1000}, 10)
		seen := map[string]bool{}
		for _, id := range got {
			if !want[id] || seen[id] {
				t.Errorf("List returned %s, unknown or twice", id)
			}
			seen[id] = true
		}
		if len(seen) != n || len(want) != n {
			t.Errorf("List found %d of %d answers accepted", len(seen), len(want))
		}
		if q := h.queueLen(); q != n {
			t.Errorf("queue length = %d, want %d", q, n)
		}
		if got := h.listAll(outbox.Filter{TicketID: "T-3"}, 10); len(got) != n/workers {
			t.Errorf("List(ticket T-3) = %d, want %d", len(got), n/workers)
		}
		if a, err := h.s.Lookup(h.ctx, outbox.ByAnswerRef, "R-5-77"); err != nil || a.AnswerRef != "R-5-77" {
			t.Errorf("Lookup(R-5-77) = %v, %v", a, err)
		}
	})
}
