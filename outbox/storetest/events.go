package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// claim claims up to max events for consumer with a one-minute claim and
// returns their ids in the order handed out.
func (h *harness) claim(consumer string, max int) ([]string, []*outbox.EventClaim) {
	h.t.Helper()
	cs, err := h.s.ClaimEvents(h.ctx, consumer, max, time.Minute)
	if err != nil {
		h.t.Fatalf("ClaimEvents(%s): %v", consumer, err)
	}
	var out []string
	for _, c := range cs {
		if c.Token == "" {
			h.t.Errorf("claim of %s has no token", c.Event.ID)
		}
		if want := h.clock.Now().Add(time.Minute); !c.Until.Equal(want) {
			h.t.Errorf("claim until %v, want now+ttl %v", c.Until, want)
		}
		out = append(out, c.Event.ID)
	}
	slices.Sort(out)
	return out, cs
}

func (h *harness) eventStats() outbox.EventStats {
	h.t.Helper()
	st, err := h.s.EventStats(h.ctx)
	if err != nil {
		h.t.Fatalf("EventStats: %v", err)
	}
	return st
}

func testEvents(t *testing.T, open Opener) {
	t.Run("first unacknowledged event per answer", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, perm(rcptA)) // a: scheduled, not_delivered, reopen
		b := h.accept(spec{})            // b: scheduled
		if st := h.eventStats(); st.Pending != 2 || !st.Oldest.Equal(a.Events[0].At) {
			t.Errorf("EventStats = %+v, want 2 pending since %v", st, a.Events[0].At)
		}
		got, cs := h.claim("c1", 10)
		if want := sorted(outbox.EventID(a.ID, 1), outbox.EventID(b.ID, 1)); !slices.Equal(got, want) {
			t.Fatalf("ClaimEvents = %v, want %v", got, want)
		}
		for _, c := range cs {
			if c.Attempts != 0 || !c.FirstAttemptAt.IsZero() || len(c.Done) != 0 {
				t.Errorf("first claim of %s: attempts %d, first %v, done %v; want none", c.Event.ID, c.Attempts, c.FirstAttemptAt, c.Done)
			}
			if c.Event.Type != outbox.EventScheduled {
				t.Errorf("claimed %s of type %s, want answer.scheduled", c.Event.ID, c.Event.Type)
			}
		}
		if got, _ := h.claim("c2", 10); len(got) != 0 {
			t.Fatalf("c2 claimed %v while c1 holds them", got)
		}
		var ca *outbox.EventClaim
		for _, c := range cs {
			if c.Event.AnswerID == a.ID {
				ca = c
			}
		}
		wantErr(t, "AckEvent", h.s.AckEvent(h.ctx, ca), nil)
		wantErr(t, "AckEvent twice", h.s.AckEvent(h.ctx, ca), outbox.ErrLeaseLost)
		var seqs []int64
		for range 3 {
			got, cs := h.claim("c2", 10)
			if len(cs) != 1 {
				break
			}
			if cs[0].Event.AnswerID != a.ID {
				t.Fatalf("claimed %v, want only a's next event", got)
			}
			seqs = append(seqs, cs[0].Event.Seq)
			wantErr(t, "AckEvent", h.s.AckEvent(h.ctx, cs[0]), nil)
		}
		if !slices.Equal(seqs, []int64{2, 3}) {
			t.Errorf("a's events claimed after the first were seq %v, want [2 3]", seqs)
		}
		if st := h.eventStats(); st.Pending != 1 || !st.Oldest.Equal(b.Events[0].At) {
			t.Errorf("EventStats = %+v, want 1 pending since %v", st, b.Events[0].At)
		}
		// A new event of a is claimable as soon as it is written.
		h.clock.Advance(time.Second)
		h.s.Resend(h.ctx, a.ID)
		got, _ = h.claim("c3", 10)
		if want := []string{outbox.EventID(a.ID, 4)}; !slices.Equal(got, want) {
			t.Errorf("ClaimEvents after Resend = %v, want %v (b is still held by c1)", got, want)
		}
	})

	t.Run("max", func(t *testing.T) {
		h := newHarness(t, open)
		for range 5 {
			h.accept(spec{})
		}
		got, _ := h.claim("c1", 3)
		got2, _ := h.claim("c2", 3)
		if len(got) != 3 || len(got2) != 2 {
			t.Errorf("claims of max 3 = %d then %d, want 3 then 2", len(got), len(got2))
		}
	})

	t.Run("retry", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA)) // a second event waits behind the first
		_, cs := h.claim("c1", 10)
		if len(cs) != 1 {
			t.Fatalf("claimed %d, want 1", len(cs))
		}
		first := h.clock.Now()
		wantErr(t, "RetryEvent", h.s.RetryEvent(h.ctx, cs[0], first.Add(5*time.Minute), []string{"hook-a"}), nil)
		wantErr(t, "RetryEvent twice", h.s.RetryEvent(h.ctx, cs[0], first.Add(5*time.Minute), nil), outbox.ErrLeaseLost)
		wantErr(t, "AckEvent after RetryEvent", h.s.AckEvent(h.ctx, cs[0]), outbox.ErrLeaseLost)
		if st := h.eventStats(); st.Pending != 1 || !st.Oldest.Equal(a.Events[0].At) {
			t.Errorf("EventStats while waiting = %+v, want 1 pending since %v", st, a.Events[0].At)
		}
		h.clock.Advance(5*time.Minute - time.Second)
		if got, _ := h.claim("c2", 10); len(got) != 0 {
			t.Fatalf("claimed %v before the retry time; the next event must wait too", got)
		}
		h.clock.Advance(time.Second)
		_, cs = h.claim("c2", 10)
		if len(cs) != 1 || cs[0].Event.Seq != 1 {
			t.Fatalf("claims at the retry time = %d, want event 1 again", len(cs))
		}
		c := cs[0]
		if c.Attempts != 1 || !c.FirstAttemptAt.Equal(first) || !slices.Equal(c.Done, []string{"hook-a"}) {
			t.Errorf("second claim: attempts %d, first %v, done %v; want 1, %v, [hook-a]", c.Attempts, c.FirstAttemptAt, c.Done, first)
		}
		if c.Event.Type != outbox.EventScheduled || c.Event.AnswerID != a.ID {
			t.Errorf("retried event = %s", mustJSON(c.Event))
		}
		wantErr(t, "RetryEvent", h.s.RetryEvent(h.ctx, c, h.clock.Now().Add(time.Minute), []string{"hook-a", "hook-b"}), nil)
		h.clock.Advance(time.Minute)
		_, cs = h.claim("c3", 10)
		if len(cs) != 1 {
			t.Fatalf("claims = %d, want 1", len(cs))
		}
		c = cs[0]
		if c.Attempts != 2 || !c.FirstAttemptAt.Equal(first) || !slices.Equal(c.Done, []string{"hook-a", "hook-b"}) {
			t.Errorf("third claim: attempts %d, first %v, done %v; want 2, %v, [hook-a hook-b]", c.Attempts, c.FirstAttemptAt, c.Done, first)
		}
		wantErr(t, "AckEvent", h.s.AckEvent(h.ctx, c), nil)
		_, cs = h.claim("c3", 10)
		if len(cs) != 1 || cs[0].Event.Seq != 2 || cs[0].Attempts != 0 || len(cs[0].Done) != 0 || !cs[0].FirstAttemptAt.IsZero() {
			t.Errorf("next event after ack: %s, want seq 2 with a fresh delivery state", mustJSON(cs))
		}
	})

	t.Run("claim lapses", func(t *testing.T) {
		h := newHarness(t, open)
		h.accept(spec{})
		_, c1 := h.claim("c1", 10)
		h.clock.Advance(59 * time.Second)
		if got, _ := h.claim("c2", 10); len(got) != 0 {
			t.Fatalf("claimed %v while c1 holds it", got)
		}
		h.clock.Advance(time.Second)
		_, c2 := h.claim("c2", 10)
		if len(c1) != 1 || len(c2) != 1 || c1[0].Event.ID != c2[0].Event.ID {
			t.Fatalf("after the claim lapsed: c2 claimed %d, want c1's event", len(c2))
		}
		if c1[0].Token == c2[0].Token {
			t.Errorf("the second claim reuses the token %q", c1[0].Token)
		}
		wantErr(t, "AckEvent with a lapsed claim", h.s.AckEvent(h.ctx, c1[0]), outbox.ErrLeaseLost)
		wantErr(t, "RetryEvent with a lapsed claim", h.s.RetryEvent(h.ctx, c1[0], h.clock.Now(), nil), outbox.ErrLeaseLost)
		wantErr(t, "AckEvent with the live claim", h.s.AckEvent(h.ctx, c2[0]), nil)
		if st := h.eventStats(); st.Pending != 0 || !st.Oldest.IsZero() {
			t.Errorf("EventStats = %+v, want none pending", st)
		}
	})

	t.Run("empty", func(t *testing.T) {
		h := newHarness(t, open)
		if got, _ := h.claim("c1", 10); len(got) != 0 {
			t.Errorf("claimed %v from an empty store", got)
		}
		if st := h.eventStats(); st.Pending != 0 || !st.Oldest.IsZero() {
			t.Errorf("EventStats = %+v, want zero", st)
		}
	})
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func testDeadLetters(t *testing.T, open Opener) {
	h := newHarness(t, open)
	a := h.accept(spec{})
	var want []string
	for i, ep := range []string{"hook-a", "hook-b", "hook-c", "hook-d"} {
		d := outbox.DeadLetter{
			ID: outbox.DeadLetterID(a.Events[0].ID, ep), Event: a.Events[0], Endpoint: ep,
			Reason: "HTTP 500", Attempts: 10 + i, At: h.clock.Now(),
		}
		wantErr(t, "AddDeadLetter", h.s.AddDeadLetter(h.ctx, d), nil)
		want = append(want, d.ID)
		h.clock.Advance(time.Minute)
	}
	list := func() []string {
		t.Helper()
		var got []string
		cursor := ""
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatal("paging does not end")
			}
			ds, next, err := h.s.ListDeadLetters(h.ctx, cursor, 3)
			wantErr(t, "ListDeadLetters", err, nil)
			if len(ds) > 3 {
				t.Errorf("ListDeadLetters(limit 3) returned %d", len(ds))
			}
			for _, d := range ds {
				got = append(got, d.ID)
			}
			if next == "" {
				return got
			}
			cursor = next
		}
	}
	if got := list(); !slices.Equal(got, want) {
		t.Errorf("ListDeadLetters = %v, want oldest first %v", got, want)
	}
	d, err := h.s.TakeDeadLetter(h.ctx, want[1])
	wantErr(t, "TakeDeadLetter", err, nil)
	if d.ID != want[1] || d.Endpoint != "hook-b" || d.Attempts != 11 || d.Event.ID != a.Events[0].ID || d.Reason != "HTTP 500" {
		t.Errorf("TakeDeadLetter = %s", mustJSON(d))
	}
	_, err = h.s.TakeDeadLetter(h.ctx, want[1])
	wantErr(t, "TakeDeadLetter twice", err, outbox.ErrNotFound)
	_, err = h.s.TakeDeadLetter(h.ctx, "no-such-letter")
	wantErr(t, "TakeDeadLetter of an unknown id", err, outbox.ErrNotFound)
	if got := list(); !slices.Equal(got, []string{want[0], want[2], want[3]}) {
		t.Errorf("ListDeadLetters after a take = %v", got)
	}
}

func testEndpoints(t *testing.T, open Opener) {
	h := newHarness(t, open)
	check := func(ep string, want bool) {
		t.Helper()
		got, err := h.s.EndpointDisabled(h.ctx, ep)
		wantErr(t, "EndpointDisabled", err, nil)
		if got != want {
			t.Errorf("EndpointDisabled(%s) = %v, want %v", ep, got, want)
		}
	}
	check("hook-a", false)
	wantErr(t, "SetEndpointDisabled", h.s.SetEndpointDisabled(h.ctx, "hook-a", true), nil)
	check("hook-a", true)
	check("hook-b", false)
	wantErr(t, "SetEndpointDisabled", h.s.SetEndpointDisabled(h.ctx, "hook-a", false), nil)
	check("hook-a", false)
}
