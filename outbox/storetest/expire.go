package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func testExpire(t *testing.T, open Opener) {
	t.Run("deletes finished answers before the cutoff", func(t *testing.T) {
		h := newHarness(t, open)
		oldSent := h.accept(spec{ref: "ref-old-sent"})
		h.mustAttempt(oldSent.ID, sent(rcptA))
		oldFailed := h.accept(spec{ref: "ref-old-failed"})
		h.mustAttempt(oldFailed.ID, sent(rcptA))
		rep := h.report("failed", rcptA)
		h.mustReport(oldFailed.ID, rep)
		oldQueued := h.accept(spec{})
		h.clock.Advance(48 * time.Hour)
		young := h.accept(spec{})
		h.mustAttempt(young.ID, sent(rcptA))
		h.clock.Advance(24 * time.Hour)

		n, err := h.s.Expire(h.ctx, Start.Add(24*time.Hour), 100)
		wantErr(t, "Expire", err, nil)
		if n != 2 {
			t.Errorf("Expire = %d, want 2", n)
		}
		for _, a := range []*outbox.Answer{oldSent, oldFailed} {
			_, err := h.s.Get(h.ctx, a.ID)
			wantErr(t, "Get of an expired answer", err, outbox.ErrExpired)
			_, err = h.s.Body(h.ctx, a.ID)
			wantOneOf(t, "Body of an expired answer", err, outbox.ErrExpired, outbox.ErrNotFound)
			for _, k := range []struct {
				key outbox.LookupKey
				v   string
			}{{outbox.ByAnswerRef, a.AnswerRef}, {outbox.ByMessageID, a.MessageID}, {outbox.ByEnvelopeID, a.EnvelopeID}} {
				_, err := h.s.Lookup(h.ctx, k.key, k.v)
				wantErr(t, "Lookup("+string(k.key)+") of an expired answer", err, outbox.ErrNotFound)
			}
			_, err = h.s.Resend(h.ctx, a.ID)
			wantOneOf(t, "Resend of an expired answer", err, outbox.ErrExpired, outbox.ErrNotFound)
			_, err = h.s.RecordReport(h.ctx, a.ID, h.report("failed", rcptA), nil)
			wantOneOf(t, "RecordReport on an expired answer", err, outbox.ErrExpired, outbox.ErrNotFound)
		}
		_, err = h.s.ReportRaw(h.ctx, oldFailed.ID, rep.ID)
		wantOneOf(t, "ReportRaw of an expired answer", err, outbox.ErrExpired, outbox.ErrNotFound)
		if got := h.listAll(outbox.Filter{}, 5); !slices.Equal(got, []string{young.ID, oldQueued.ID}) {
			t.Errorf("List after Expire = %v, want [young oldQueued]", got)
		}
		if got := h.listAll(outbox.Filter{Status: outbox.StatusNotDelivered}, 5); len(got) != 0 {
			t.Errorf("List(not_delivered) after Expire = %v, want none", got)
		}
		if got := h.listAll(outbox.Filter{TicketID: oldSent.TicketID}, 5); len(got) != 0 {
			t.Errorf("List(ticket) after Expire = %v, want none", got)
		}
		// Only the events of the answers kept are left.
		for range 10 {
			_, cs := h.claim("c1", 10)
			if len(cs) == 0 {
				break
			}
			for _, c := range cs {
				if c.Event.AnswerID == oldSent.ID || c.Event.AnswerID == oldFailed.ID {
					t.Fatalf("claimed %s of an expired answer", c.Event.ID)
				}
				wantErr(t, "AckEvent", h.s.AckEvent(h.ctx, c), nil)
			}
		}
		if st := h.eventStats(); st.Pending != 0 {
			t.Errorf("EventStats after acking every event = %+v", st)
		}
		for _, a := range []*outbox.Answer{oldQueued, young} {
			h.get(a.ID)
			if _, err := h.s.Body(h.ctx, a.ID); err != nil {
				t.Errorf("Body of %s, which was kept: %v", a.ID, err)
			}
		}
		if q := h.queueLen(); q != 1 {
			t.Errorf("queue length = %d, want 1 (the old queued answer)", q)
		}
		if n, _ := h.s.Expire(h.ctx, Start.Add(24*time.Hour), 100); n != 0 {
			t.Errorf("Expire again = %d, want 0", n)
		}
		_, err = h.s.Get(h.ctx, outbox.NewID(Start))
		wantErr(t, "Get of an id never seen", err, outbox.ErrNotFound)
	})

	t.Run("unacknowledged events go with the answer", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA))
		h.clock.Advance(48 * time.Hour)
		if n, _ := h.s.Expire(h.ctx, h.clock.Now(), 10); n != 1 {
			t.Fatalf("Expire = %d, want 1", n)
		}
		if got, _ := h.claim("c1", 10); len(got) != 0 {
			t.Errorf("claimed %v of an expired answer", got)
		}
		if st := h.eventStats(); st.Pending != 0 {
			t.Errorf("EventStats = %+v, want none pending", st)
		}
	})

	t.Run("max", func(t *testing.T) {
		h := newHarness(t, open)
		for range 3 {
			a := h.accept(spec{})
			h.mustAttempt(a.ID, sent(rcptA))
		}
		h.clock.Advance(48 * time.Hour)
		var got []int
		for range 3 {
			n, err := h.s.Expire(h.ctx, h.clock.Now(), 2)
			if err != nil {
				t.Fatalf("Expire: %v", err)
			}
			got = append(got, n)
		}
		if !slices.Equal(got, []int{2, 1, 0}) {
			t.Errorf("Expire(max 2) three times = %v, want [2 1 0]", got)
		}
	})
}

func testPingClose(t *testing.T, open Opener) {
	h := newHarness(t, open)
	wantErr(t, "Ping", h.s.Ping(h.ctx), nil)
	wantErr(t, "Close", h.s.Close(), nil)
	err := h.s.Ping(h.ctx)
	if err == nil || !errors.Is(err, outbox.ErrUnavailable) {
		t.Errorf("Ping after Close = %v, want an error wrapping ErrUnavailable", err)
	}
	_, err = h.s.Get(h.ctx, outbox.NewID(Start))
	if !errors.Is(err, outbox.ErrUnavailable) {
		t.Errorf("Get after Close = %v, want an error wrapping ErrUnavailable", err)
	}
}
