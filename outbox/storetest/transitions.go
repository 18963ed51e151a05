package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// A state drives a freshly accepted answer into a status through the Store.
type state struct {
	name string
	to   func(h *harness, id string)
}

var (
	stScheduled = state{"scheduled", func(*harness, string) {}}
	stDelayed   = state{"delayed", func(h *harness, id string) {
		h.clock.Advance(4 * time.Hour)
		if n, err := h.markDelayed(h.clock.Now().Add(-3*time.Hour), 10); n != 1 || err != nil {
			h.t.Fatalf("MarkDelayed = %d, %v; want 1", n, err)
		}
	}}
	stSent         = state{"sent", func(h *harness, id string) { h.mustAttempt(id, sent(rcptA)) }}
	stDSNDelayed   = state{"sent, then a delay DSN", func(h *harness, id string) { stSent.to(h, id); h.mustReport(id, h.report("delayed", rcptA)) }}
	stDelivered    = state{"delivered", func(h *harness, id string) { stSent.to(h, id); h.mustReport(id, h.report("delivered", rcptA)) }}
	stNotDelivered = state{"not delivered", func(h *harness, id string) { h.mustAttempt(id, perm(rcptA)) }}
	stResent       = state{"resent", func(h *harness, id string) {
		stNotDelivered.to(h, id)
		if _, err := h.s.Resend(h.ctx, id); err != nil {
			h.t.Fatalf("Resend: %v", err)
		}
	}}
)

// An action is one Store call on the answer.
type action struct {
	name     string
	reported bool // adds a report to the answer when it succeeds
	do       func(h *harness, id string) (*outbox.Answer, error)
}

func attemptAction(name string, o func(string) outbox.RecipientOutcome, reported bool) action {
	return action{name, reported, func(h *harness, id string) (*outbox.Answer, error) { return h.attempt(id, o(rcptA)) }}
}

func reportAction(kind, act string) action {
	return action{"report " + kind + " " + act, true, func(h *harness, id string) (*outbox.Answer, error) {
		rep := h.report(act, rcptA)
		rep.Kind = kind
		return h.s.RecordReport(h.ctx, id, rep, []byte("raw"))
	}}
}

var (
	acSent      = attemptAction("attempt sent", sent, false)
	acTemporary = attemptAction("attempt temporary", temp, false)
	acPermanent = attemptAction("attempt permanent", perm, true)
	acFailed    = reportAction("dsn", "failed")
	acDelayed   = reportAction("dsn", "delayed")
	acDelivered = reportAction("dsn", "delivered")
	acFeedback  = reportAction(outbox.ReportKindFeedback, "failed")
	acAutoReply = reportAction(outbox.ReportKindAutoReply, "delivered")
	acResend    = action{"resend", false, func(h *harness, id string) (*outbox.Answer, error) { return h.s.Resend(h.ctx, id) }}
	acMark      = action{"mark delayed", false, func(h *harness, id string) (*outbox.Answer, error) {
		h.clock.Advance(4 * time.Hour)
		if _, err := h.markDelayed(h.clock.Now().Add(-3*time.Hour), 10); err != nil {
			return nil, err
		}
		return h.s.Get(h.ctx, id)
	}}
)

var (
	nd     = outbox.EventNotDelivered
	reopen = outbox.EventTicketReopen
)

// testTransitions is the before/after table of SPEC section 2 as seen
// through the Store: from a status, one call, then the answer's status, the
// events it emitted, and whether it is still queued for delivery.
func testTransitions(t *testing.T, open Opener) {
	for _, tc := range []struct {
		before     state
		noTicket   bool
		act        action
		err        error
		wantStatus outbox.Status
		wantEvents []outbox.EventType
		wantQueued bool
	}{
		{before: stScheduled, act: acSent, wantStatus: outbox.StatusSent, wantEvents: []outbox.EventType{outbox.EventSent}},
		{before: stScheduled, act: acTemporary, wantStatus: outbox.StatusScheduled, wantEvents: nil, wantQueued: true},
		{before: stScheduled, act: acPermanent, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stScheduled, noTicket: true, act: acPermanent, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd}},
		{before: stScheduled, act: acFailed, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stScheduled, act: acDelayed, wantStatus: outbox.StatusDelayed, wantEvents: []outbox.EventType{outbox.EventDelayed}, wantQueued: true},
		{before: stScheduled, act: acMark, wantStatus: outbox.StatusDelayed, wantEvents: []outbox.EventType{outbox.EventDelayed}, wantQueued: true},
		{before: stScheduled, act: acResend, err: outbox.ErrIllegalTransition, wantStatus: outbox.StatusScheduled, wantQueued: true},
		{before: stDelayed, act: acSent, wantStatus: outbox.StatusSent, wantEvents: []outbox.EventType{outbox.EventSent}},
		{before: stDelayed, act: acTemporary, wantStatus: outbox.StatusDelayed, wantQueued: true},
		{before: stDelayed, act: acPermanent, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stDelayed, act: acMark, wantStatus: outbox.StatusDelayed, wantQueued: true},
		{before: stDelayed, act: acDelayed, wantStatus: outbox.StatusDelayed, wantQueued: true},
		{before: stSent, act: acDelayed, wantStatus: outbox.StatusDelayed, wantEvents: []outbox.EventType{outbox.EventDelayed}, wantQueued: false},
		{before: stSent, act: acFailed, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stSent, noTicket: true, act: acFailed, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd}},
		{before: stSent, act: acDelivered, wantStatus: outbox.StatusDelivered, wantEvents: []outbox.EventType{outbox.EventDelivered}},
		{before: stSent, act: acFeedback, wantStatus: outbox.StatusSent},
		{before: stSent, act: acAutoReply, wantStatus: outbox.StatusSent},
		{before: stSent, act: acResend, err: outbox.ErrIllegalTransition, wantStatus: outbox.StatusSent},
		{before: stSent, act: acMark, wantStatus: outbox.StatusSent},
		{before: stDSNDelayed, act: acDelivered, wantStatus: outbox.StatusDelivered, wantEvents: []outbox.EventType{outbox.EventDelivered}},
		{before: stDSNDelayed, act: acFailed, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stDSNDelayed, act: acMark, wantStatus: outbox.StatusDelayed},
		{before: stDelivered, act: acFailed, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stDelivered, act: acDelayed, wantStatus: outbox.StatusDelivered},
		{before: stDelivered, act: acDelivered, wantStatus: outbox.StatusDelivered},
		{before: stNotDelivered, act: acFailed, wantStatus: outbox.StatusNotDelivered},
		{before: stNotDelivered, act: acDelayed, wantStatus: outbox.StatusNotDelivered},
		{before: stNotDelivered, act: acDelivered, wantStatus: outbox.StatusNotDelivered},
		{before: stNotDelivered, act: acResend, wantStatus: outbox.StatusScheduled, wantEvents: []outbox.EventType{outbox.EventScheduled}, wantQueued: true},
		{before: stNotDelivered, noTicket: true, act: acResend, wantStatus: outbox.StatusScheduled, wantEvents: []outbox.EventType{outbox.EventScheduled}, wantQueued: true},
		{before: stNotDelivered, act: acMark, wantStatus: outbox.StatusNotDelivered},
		{before: stResent, act: acPermanent, wantStatus: outbox.StatusNotDelivered, wantEvents: []outbox.EventType{nd, reopen}},
		{before: stResent, act: acSent, wantStatus: outbox.StatusSent, wantEvents: []outbox.EventType{outbox.EventSent}},
		{before: stResent, act: acMark, wantStatus: outbox.StatusDelayed, wantEvents: []outbox.EventType{outbox.EventDelayed}, wantQueued: true},
	} {
		name := tc.before.name + "/" + tc.act.name
		if tc.noTicket {
			name += " without ticket"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, open)
			sp := spec{}
			if tc.noTicket {
				sp.ticket = "-"
			}
			a := h.accept(sp)
			tc.before.to(h, a.ID)
			before := h.get(a.ID)
			h.clock.Advance(time.Second)
			got, err := tc.act.do(h, a.ID)
			wantErr(t, tc.act.name, err, tc.err)
			after := h.get(a.ID)
			if tc.err != nil {
				h.unchanged(before)
			} else {
				if got == nil || !sameRecord(got, after) {
					t.Errorf("returned record differs from the stored one:\nreturned %s\nstored   %s", mustJSON(got), mustJSON(after))
				}
				if changed := len(tc.wantEvents) > 0 || tc.act.reported || tc.act.name != acMark.name; changed && after.Version <= before.Version {
					t.Errorf("version %d → %d, want it to grow on a write", before.Version, after.Version)
				}
			}
			if after.Status != tc.wantStatus {
				t.Errorf("status = %s, want %s", after.Status, tc.wantStatus)
			}
			if got := newEvents(before, after); !slices.Equal(got, tc.wantEvents) && (len(got) > 0 || len(tc.wantEvents) > 0) {
				t.Errorf("events = %v, want %v", got, tc.wantEvents)
			}
			for _, e := range after.Events[len(before.Events):] {
				if e.Status != after.Status || e.PreviousStatus != before.Status || e.TicketID != after.TicketID || e.AnswerRef != after.AnswerRef || e.At.IsZero() {
					t.Errorf("event %s = %s, want status %s, previous %s, ticket %q, ref %q, a time", e.ID, mustJSON(e), after.Status, before.Status, after.TicketID, after.AnswerRef)
				}
			}
			if tc.err == nil && tc.act.reported && len(after.Reports) != len(before.Reports)+1 {
				t.Errorf("reports %d → %d, want one more", len(before.Reports), len(after.Reports))
			}
			if q := h.queueLen() == 1; q != tc.wantQueued {
				t.Errorf("queued = %v, want %v", q, tc.wantQueued)
			}
			if tc.wantQueued {
				h.clock.Advance(retryIn)
				if got, _ := h.leaseIDs("w9", 10, time.Minute); !slices.Equal(got, []string{a.ID}) {
					t.Errorf("queued answer not leased when due: %v", got)
				}
			} else {
				h.clock.Advance(24 * time.Hour)
				if got, _ := h.leaseIDs("w9", 10, time.Minute); len(got) != 0 {
					t.Errorf("Lease handed out %v, which is not queued", got)
				}
			}
		})
	}
}
