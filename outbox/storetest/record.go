package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func testRecordAttempt(t *testing.T, open Opener) {
	t.Run("mixed outcomes", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{rcpts: []string{rcptA, rcptB, rcptC}})
		got := h.mustAttempt(a.ID, sent(rcptA), temp(rcptB), perm(rcptC))
		want := map[string]outbox.Status{rcptA: outbox.StatusSent, rcptB: outbox.StatusScheduled, rcptC: outbox.StatusNotDelivered}
		for _, r := range got.Recipients {
			if r.Status != want[r.Address] {
				t.Errorf("recipient %s: %s, want %s", r.Address, r.Status, want[r.Address])
			}
		}
		if got.Status != outbox.StatusNotDelivered || !slices.Equal(eventTypes(got.Events), []outbox.EventType{outbox.EventScheduled, nd, reopen}) {
			t.Errorf("answer: %s %v, want not_delivered [scheduled not_delivered reopen]", got.Status, eventTypes(got.Events))
		}
		if len(got.Reports) != 1 || got.Reports[0].Source != outbox.SourceUpstream || len(got.Reports[0].Recipients) != 1 || got.Reports[0].Recipients[0].Address != rcptC {
			t.Errorf("reports = %s, want one upstream report about %s", mustJSON(got.Reports), rcptC)
		}
		if len(got.Attempts) != 1 || len(got.Attempts[0].Outcomes) != 3 {
			t.Errorf("attempts = %s, want one with three outcomes", mustJSON(got.Attempts))
		}
		// b is still queued, due at the next attempt time, alone.
		if n := h.queueLen(); n != 1 {
			t.Errorf("queue length = %d, want 1", n)
		}
		h.clock.Advance(retryIn)
		l := h.lease("w2", a.ID)
		if p := l.Answer.PendingRecipients(); !slices.Equal(p, []string{rcptB}) {
			t.Errorf("pending recipients = %v, want [%s]", p, rcptB)
		}
		got, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptB)))
		wantErr(t, "RecordAttempt", err, nil)
		if got.Status != outbox.StatusNotDelivered || len(got.Events) != 3 || len(got.Attempts) != 2 || got.Attempts[1].Number != 2 {
			t.Errorf("after b sent: %s, %d events, %d attempts; want not_delivered, 3 events (no new one), 2 attempts", got.Status, len(got.Events), len(got.Attempts))
		}
		if n := h.queueLen(); n != 0 {
			t.Errorf("queue length = %d, want 0", n)
		}
	})

	t.Run("bad attempts write nothing", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			att  func(h *harness) outbox.Attempt
			err  error
		}{
			{"outcome for a recipient already sent", func(h *harness) outbox.Attempt { return h.attemptWith(sent(rcptA), sent(rcptB)) }, outbox.ErrIllegalTransition},
			{"outcome for a stranger", func(h *harness) outbox.Attempt { return h.attemptWith(sent("eve@elsewhere.example")) }, outbox.ErrIllegalTransition},
			{"temporary without a next attempt time", func(h *harness) outbox.Attempt {
				att := h.attemptWith(temp(rcptB))
				att.NextAttemptAt = time.Time{}
				return att
			}, outbox.ErrInvalid},
			{"unknown outcome kind", func(h *harness) outbox.Attempt {
				return h.attemptWith(outbox.RecipientOutcome{Address: rcptB, Kind: "maybe"})
			}, outbox.ErrInvalid},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, open)
				a := h.accept(spec{rcpts: []string{rcptA, rcptB}})
				h.mustAttempt(a.ID, sent(rcptA), temp(rcptB))
				h.clock.Advance(retryIn)
				l := h.lease("w1", a.ID)
				before := h.get(a.ID)
				_, err := h.s.RecordAttempt(h.ctx, l, tc.att(h))
				wantErr(t, "RecordAttempt", err, tc.err)
				h.unchanged(before)
				// The lease still holds: the worker can record a good outcome.
				if _, err := h.s.RecordAttempt(h.ctx, l, h.attemptWith(sent(rcptB))); err != nil {
					t.Errorf("RecordAttempt after a rejected one: %v", err)
				}
			})
		}
	})
}

// markDelayed calls MarkDelayed and checks that every event it returns is
// an answer.delayed of a distinct answer; it returns how many there were.
func (h *harness) markDelayed(queuedBefore time.Time, max int) (int, error) {
	h.t.Helper()
	events, err := h.s.MarkDelayed(h.ctx, queuedBefore, max)
	seen := map[string]bool{}
	for _, e := range events {
		if e.Type != outbox.EventDelayed || e.Status != outbox.StatusDelayed || seen[e.AnswerID] {
			h.t.Errorf("MarkDelayed returned %+v: want one answer.delayed per answer", e)
		}
		seen[e.AnswerID] = true
	}
	return len(events), err
}

func testMarkDelayed(t *testing.T, open Opener) {
	t.Run("only scheduled, only older than the cutoff, once", func(t *testing.T) {
		h := newHarness(t, open)
		old := h.accept(spec{})
		oldSent := h.accept(spec{})
		h.mustAttempt(oldSent.ID, sent(rcptA))
		oldFailed := h.accept(spec{})
		h.mustAttempt(oldFailed.ID, perm(rcptA))
		retried := h.accept(spec{}) // queued, failed temporarily: still scheduled
		h.mustAttempt(retried.ID, temp(rcptA))
		leased := h.accept(spec{})
		_, ls := h.leaseIDs("w1", 500, 24*time.Hour) // old and leased are due
		for _, l := range ls {
			if l.Answer.ID != leased.ID {
				wantErr(t, "Release", h.s.Release(h.ctx, l), nil)
			}
		}
		h.clock.Advance(time.Hour)
		young := h.accept(spec{})
		h.clock.Advance(2*time.Hour + 30*time.Minute)

		cutoff := h.clock.Now().Add(-3 * time.Hour) // between the old ones and young
		n, err := h.markDelayed(cutoff, 100)
		wantErr(t, "MarkDelayed", err, nil)
		if n != 3 {
			t.Errorf("MarkDelayed = %d, want 3 (old, retried, leased)", n)
		}
		for _, tc := range []struct {
			a    *outbox.Answer
			want outbox.Status
		}{{old, outbox.StatusDelayed}, {retried, outbox.StatusDelayed}, {leased, outbox.StatusDelayed}, {oldSent, outbox.StatusSent}, {oldFailed, outbox.StatusNotDelivered}, {young, outbox.StatusScheduled}} {
			got := h.get(tc.a.ID)
			if got.Status != tc.want {
				t.Errorf("%s: %s, want %s", tc.a.ID, got.Status, tc.want)
			}
			if tc.want == outbox.StatusDelayed && got.Events[len(got.Events)-1].Type != outbox.EventDelayed {
				t.Errorf("%s: last event %s, want answer.delayed", tc.a.ID, got.Events[len(got.Events)-1].Type)
			}
		}
		if n, _ := h.markDelayed(cutoff, 100); n != 0 {
			t.Errorf("MarkDelayed again = %d, want 0", n)
		}
		h.clock.Advance(time.Hour)
		if n, _ := h.markDelayed(h.clock.Now().Add(-3*time.Hour), 100); n != 1 {
			t.Errorf("MarkDelayed an hour later = %d, want 1 (young)", n)
		}
		for _, a := range []*outbox.Answer{old, retried, leased, young} {
			got := h.get(a.ID)
			if c := countType(got.Events, outbox.EventDelayed); c != 1 {
				t.Errorf("%s has %d answer.delayed events, want 1", a.ID, c)
			}
		}
		if q := h.queueLen(); q != 4 {
			t.Errorf("queue length = %d, want 4: delayed answers stay queued", q)
		}
	})

	t.Run("max", func(t *testing.T) {
		h := newHarness(t, open)
		for range 5 {
			h.accept(spec{})
		}
		h.clock.Advance(4 * time.Hour)
		var got []int
		for range 4 {
			n, err := h.markDelayed(h.clock.Now().Add(-3*time.Hour), 2)
			wantErr(t, "MarkDelayed", err, nil)
			got = append(got, n)
		}
		if !slices.Equal(got, []int{2, 2, 1, 0}) {
			t.Errorf("MarkDelayed(max 2) four times = %v, want [2 2 1 0]", got)
		}
	})

	t.Run("one recipient of two still scheduled", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{rcpts: []string{rcptA, rcptB}})
		h.mustAttempt(a.ID, sent(rcptA), temp(rcptB))
		h.clock.Advance(4 * time.Hour)
		if n, _ := h.markDelayed(h.clock.Now().Add(-3*time.Hour), 10); n != 1 {
			t.Fatalf("MarkDelayed = %d, want 1", n)
		}
		got := h.get(a.ID)
		if got.Status != outbox.StatusDelayed || got.Recipients[0].Status != outbox.StatusSent || got.Recipients[1].Status != outbox.StatusDelayed {
			t.Errorf("after MarkDelayed: %s %s/%s, want delayed sent/delayed", got.Status, got.Recipients[0].Status, got.Recipients[1].Status)
		}
	})
}

func countType(es []outbox.Event, typ outbox.EventType) int {
	n := 0
	for _, e := range es {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func testRecordReport(t *testing.T, open Opener) {
	t.Run("raw kept", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA))
		rep := h.report("failed", rcptA)
		raw := []byte("From: MAILER-DAEMON@mx.customer.example\r\nContent-Type: multipart/report; report-type=delivery-status\r\n\r\n...")
		got, err := h.s.RecordReport(h.ctx, a.ID, rep, raw)
		wantErr(t, "RecordReport", err, nil)
		if len(got.Reports) != 1 || got.Reports[0].ID != rep.ID {
			t.Fatalf("reports = %s, want %s", mustJSON(got.Reports), rep.ID)
		}
		if s := got.Events[len(got.Events)-2].Report; s == nil || s.ReportID != rep.ID || s.Recipient != rcptA || s.StatusCode != "5.1.1" {
			t.Errorf("answer.not_delivered carries report summary %s", mustJSON(s))
		}
		b, err := h.s.ReportRaw(h.ctx, a.ID, rep.ID)
		wantErr(t, "ReportRaw", err, nil)
		if !bytes.Equal(b, raw) {
			t.Errorf("ReportRaw = %q, want %q", b, raw)
		}
		_, err = h.s.ReportRaw(h.ctx, a.ID, "no-such-report")
		wantErr(t, "ReportRaw of an unknown report", err, outbox.ErrNotFound)
		_, err = h.s.ReportRaw(h.ctx, outbox.NewID(Start), rep.ID)
		wantErr(t, "ReportRaw of an unknown answer", err, outbox.ErrNotFound)
	})

	t.Run("raw capped", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		rep := h.report("failed", rcptA)
		raw := bytes.Repeat([]byte("x"), outbox.MaxRawReport+1000)
		if _, err := h.s.RecordReport(h.ctx, a.ID, rep, raw); err != nil {
			t.Fatalf("RecordReport with a large raw message: %v", err)
		}
		b, err := h.s.ReportRaw(h.ctx, a.ID, rep.ID)
		wantErr(t, "ReportRaw", err, nil)
		if len(b) > outbox.MaxRawReport || !bytes.Equal(b, raw[:len(b)]) {
			t.Errorf("ReportRaw = %d bytes, want at most the first %d", len(b), outbox.MaxRawReport)
		}
	})

	t.Run("duplicate", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		rep := h.report("failed", rcptA)
		h.mustReport(a.ID, rep)
		before := h.get(a.ID)
		h.clock.Advance(time.Minute)
		_, err := h.s.RecordReport(h.ctx, a.ID, rep, []byte("again"))
		wantErr(t, "RecordReport of the same report", err, outbox.ErrDuplicate)
		h.unchanged(before)
		if b, _ := h.s.ReportRaw(h.ctx, a.ID, rep.ID); !bytes.Equal(b, []byte("raw "+rep.ID)) {
			t.Errorf("ReportRaw after a duplicate = %q, want the first raw message", b)
		}
	})

	t.Run("reopen exactly once per episode", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{rcpts: []string{rcptA, rcptB}})
		h.mustAttempt(a.ID, sent(rcptA), sent(rcptB))
		h.mustReport(a.ID, h.report("failed", rcptA))
		h.mustReport(a.ID, h.report("failed", rcptB))
		h.mustReport(a.ID, h.report("failed", rcptA, rcptB))
		got := h.get(a.ID)
		if c := countType(got.Events, reopen); c != 1 {
			t.Errorf("%d ticket.reopen events after three failure reports, want 1", c)
		}
		if c := countType(got.Events, nd); c != 1 {
			t.Errorf("%d answer.not_delivered events, want 1", c)
		}
		if !got.Reopened {
			t.Error("Reopened not set")
		}
	})

	t.Run("unknown answer", func(t *testing.T) {
		h := newHarness(t, open)
		_, err := h.s.RecordReport(h.ctx, outbox.NewID(Start), h.report("failed", rcptA), nil)
		wantErr(t, "RecordReport", err, outbox.ErrNotFound)
	})

	t.Run("report without an id", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		rep := h.report("failed", rcptA)
		rep.ID = ""
		_, err := h.s.RecordReport(h.ctx, a.ID, rep, nil)
		wantErr(t, "RecordReport", err, outbox.ErrInvalid)
		h.unchanged(a)
	})

	t.Run("forwarded address applies to the only recipient", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA))
		got := h.mustReport(a.ID, h.report("failed", "ann.final@forward.example"))
		if got.Status != outbox.StatusNotDelivered {
			t.Errorf("status = %s, want not_delivered", got.Status)
		}
	})
}

func testResend(t *testing.T, open Opener) {
	h := newHarness(t, open)
	a := h.accept(spec{rcpts: []string{rcptA, rcptB}})
	h.mustAttempt(a.ID, sent(rcptA), perm(rcptB))
	h.clock.Advance(time.Hour)
	got, err := h.s.Resend(h.ctx, a.ID)
	wantErr(t, "Resend", err, nil)
	if got.Status != outbox.StatusScheduled || got.Recipients[0].Status != outbox.StatusSent || got.Recipients[1].Status != outbox.StatusScheduled {
		t.Errorf("after Resend: %s %s/%s, want scheduled sent/scheduled", got.Status, got.Recipients[0].Status, got.Recipients[1].Status)
	}
	if !got.QueuedAt.Equal(h.clock.Now()) || got.Reopened {
		t.Errorf("after Resend: queued at %v, reopened %v; want now, false", got.QueuedAt, got.Reopened)
	}
	qs, _ := h.s.QueueStats(h.ctx)
	if qs.Length != 1 || !qs.Oldest.Equal(h.clock.Now()) {
		t.Errorf("QueueStats = %+v, want 1 queued since now", qs)
	}
	l := h.lease("w1", a.ID)
	if p := l.Answer.PendingRecipients(); !slices.Equal(p, []string{rcptB}) {
		t.Errorf("pending after Resend = %v, want [%s]", p, rcptB)
	}
	wantErr(t, "Release", h.s.Release(h.ctx, l), nil)
	_, err = h.s.Resend(h.ctx, a.ID)
	wantErr(t, "Resend twice", err, outbox.ErrIllegalTransition)
	_, err = h.s.Resend(h.ctx, outbox.NewID(Start))
	wantErr(t, "Resend of an unknown answer", err, outbox.ErrNotFound)
}

func testUnmatched(t *testing.T, open Opener) {
	h := newHarness(t, open)
	if n, err := h.s.CountUnmatched(h.ctx); n != 0 || err != nil {
		t.Fatalf("CountUnmatched on an empty store = %d, %v", n, err)
	}
	var want []string
	for range 5 {
		rep := h.report("failed", "someone@nowhere.example")
		wantErr(t, "RecordUnmatched", h.s.RecordUnmatched(h.ctx, rep, []byte("raw")), nil)
		want = append(want, rep.ID)
		h.clock.Advance(time.Minute)
	}
	dup := h.report("failed", "x@nowhere.example")
	dup.ID = want[2]
	wantErr(t, "RecordUnmatched of the same report", h.s.RecordUnmatched(h.ctx, dup, nil), outbox.ErrDuplicate)
	if n, err := h.s.CountUnmatched(h.ctx); n != 5 || err != nil {
		t.Errorf("CountUnmatched = %d, %v; want 5", n, err)
	}
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("paging does not end")
		}
		us, next, err := h.s.ListUnmatched(h.ctx, cursor, 2)
		wantErr(t, "ListUnmatched", err, nil)
		if len(us) > 2 {
			t.Errorf("ListUnmatched(limit 2) returned %d", len(us))
		}
		for _, u := range us {
			got = append(got, u.Report.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, reversed(want)) {
		t.Errorf("ListUnmatched = %v, want newest first %v", got, reversed(want))
	}
}

func testQueueStats(t *testing.T, open Opener) {
	h := newHarness(t, open)
	want := func(n int, oldest time.Time) {
		t.Helper()
		qs, err := h.s.QueueStats(h.ctx)
		wantErr(t, "QueueStats", err, nil)
		if qs.Length != n || !qs.Oldest.Equal(oldest) {
			t.Errorf("QueueStats = {%d %v}, want {%d %v}", qs.Length, qs.Oldest, n, oldest)
		}
	}
	want(0, time.Time{})
	a := h.accept(spec{})
	h.clock.Advance(time.Minute)
	b := h.accept(spec{})
	want(2, a.QueuedAt)
	h.mustAttempt(a.ID, temp(rcptA))
	want(2, a.QueuedAt)
	h.mustAttempt(b.ID, sent(rcptA))
	want(1, a.QueuedAt)
	h.clock.Advance(retryIn)
	h.mustAttempt(a.ID, perm(rcptA))
	want(0, time.Time{})
	h.clock.Advance(time.Minute)
	h.s.Resend(h.ctx, a.ID)
	want(1, h.clock.Now())
}
