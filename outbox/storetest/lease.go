package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func testLease(t *testing.T, open Opener) {
	t.Run("due order and max", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		b := h.accept(spec{})
		c := h.accept(spec{})
		got, ls := h.leaseIDs("w1", 2, time.Minute)
		if want := []string{a.ID, b.ID}; !slices.Equal(got, want) {
			t.Fatalf("Lease(max 2) = %v, want the two oldest due %v", got, want)
		}
		// a is retried in 5 minutes, b in 1 minute: c is due first, then b, then a.
		now := h.clock.Now()
		att := h.attemptWith(temp(rcptA))
		att.NextAttemptAt = now.Add(5 * time.Minute)
		if _, err := h.s.RecordAttempt(h.ctx, ls[0], att); err != nil {
			t.Fatalf("RecordAttempt: %v", err)
		}
		att.NextAttemptAt = now.Add(time.Minute)
		if _, err := h.s.RecordAttempt(h.ctx, ls[1], att); err != nil {
			t.Fatalf("RecordAttempt: %v", err)
		}
		h.clock.Advance(10 * time.Minute)
		got, _ = h.leaseIDs("w2", 10, time.Minute)
		if want := []string{c.ID, b.ID, a.ID}; !slices.Equal(got, want) {
			t.Errorf("Lease = %v, want in due order %v", got, want)
		}
	})

	t.Run("not due before next attempt", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, temp(rcptA))
		h.clock.Advance(retryIn - time.Second)
		if got, _ := h.leaseIDs("w1", 10, time.Minute); len(got) != 0 {
			t.Fatalf("Lease before the next attempt time = %v, want none", got)
		}
		h.clock.Advance(time.Second)
		if got, _ := h.leaseIDs("w1", 10, time.Minute); !slices.Equal(got, []string{a.ID}) {
			t.Errorf("Lease at the next attempt time = %v, want [%s]", got, a.ID)
		}
	})

	t.Run("expired lease goes to another worker", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		_, l1 := h.leaseIDs("w1", 10, time.Minute)
		if len(l1) != 1 {
			t.Fatalf("w1 leased %d answers, want 1", len(l1))
		}
		if l1[0].Answer.ID != a.ID || l1[0].Answer.Status != outbox.StatusScheduled {
			t.Errorf("lease carries %s in %s, want %s scheduled", l1[0].Answer.ID, l1[0].Answer.Status, a.ID)
		}
		h.clock.Advance(59 * time.Second)
		if got, _ := h.leaseIDs("w2", 10, time.Minute); len(got) != 0 {
			t.Fatalf("w2 leased %v while w1's lease runs", got)
		}
		h.clock.Advance(time.Second)
		_, l2 := h.leaseIDs("w2", 10, time.Minute)
		if len(l2) != 1 || l2[0].Answer.ID != a.ID {
			t.Fatalf("w2 after w1's lease expired: %d leases, want %s", len(l2), a.ID)
		}
		if l2[0].Token == l1[0].Token {
			t.Errorf("the second lease reuses the first one's token %q", l1[0].Token)
		}
		before := h.get(a.ID)
		_, err := h.s.RecordAttempt(h.ctx, l1[0], h.attemptWith(sent(rcptA)))
		wantErr(t, "RecordAttempt with the expired lease", err, outbox.ErrLeaseLost)
		wantErr(t, "Release with the expired lease", h.s.Release(h.ctx, l1[0]), outbox.ErrLeaseLost)
		h.unchanged(before)
		got, err := h.s.RecordAttempt(h.ctx, l2[0], h.attemptWith(sent(rcptA)))
		wantErr(t, "RecordAttempt with the live lease", err, nil)
		if got.Status != outbox.StatusSent || len(got.Attempts) != 1 {
			t.Errorf("after w2's attempt: status %s, %d attempts; want sent, 1", got.Status, len(got.Attempts))
		}
		_, err = h.s.RecordAttempt(h.ctx, l2[0], h.attemptWith(sent(rcptA)))
		wantErr(t, "RecordAttempt twice with one lease", err, outbox.ErrLeaseLost)
	})

	t.Run("extended lease keeps the answer", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		_, l1 := h.leaseIDs("w1", 10, time.Minute)
		if len(l1) != 1 {
			t.Fatalf("w1 leased %d answers, want 1", len(l1))
		}
		h.clock.Advance(50 * time.Second)
		wantErr(t, "ExtendLease", h.s.ExtendLease(h.ctx, l1[0], time.Minute), nil)
		if want := h.clock.Now().Add(time.Minute); !l1[0].Until.Equal(want) {
			t.Errorf("extended lease until = %v, want %v", l1[0].Until, want)
		}
		h.clock.Advance(50 * time.Second) // past the first end, before the new one
		if got, _ := h.leaseIDs("w2", 10, time.Minute); len(got) != 0 {
			t.Fatalf("w2 leased %v while w1's extended lease runs", got)
		}
		h.clock.Advance(10 * time.Second)
		_, l2 := h.leaseIDs("w2", 10, time.Minute)
		if len(l2) != 1 || l2[0].Answer.ID != a.ID {
			t.Fatalf("w2 after the extended lease expired: %d leases, want %s", len(l2), a.ID)
		}
		until := l1[0].Until
		wantErr(t, "ExtendLease of a lease taken since", h.s.ExtendLease(h.ctx, l1[0], time.Hour), outbox.ErrLeaseLost)
		if !l1[0].Until.Equal(until) {
			t.Error("a failed ExtendLease changed the lease's end")
		}
		if got, _ := h.leaseIDs("w3", 10, time.Minute); len(got) != 0 {
			t.Fatalf("w3 leased %v: the stale extension moved w2's lease", got)
		}
		_, err := h.s.RecordAttempt(h.ctx, l2[0], h.attemptWith(sent(rcptA)))
		wantErr(t, "RecordAttempt with the live lease", err, nil)
		wantErr(t, "ExtendLease after RecordAttempt", h.s.ExtendLease(h.ctx, l2[0], time.Minute), outbox.ErrLeaseLost)
	})

	t.Run("release", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		h.mustAttempt(a.ID, temp(rcptA))
		h.clock.Advance(retryIn)
		_, ls := h.leaseIDs("w1", 10, time.Hour)
		if len(ls) != 1 {
			t.Fatalf("leased %d, want 1", len(ls))
		}
		before := h.get(a.ID)
		wantErr(t, "Release", h.s.Release(h.ctx, ls[0]), nil)
		if after := h.get(a.ID); !sameRecord(before, after) || len(after.Attempts) != 1 {
			t.Errorf("Release changed the record:\nbefore %s\nafter  %s", mustJSON(before), mustJSON(after))
		}
		if got, _ := h.leaseIDs("w2", 10, time.Minute); !slices.Equal(got, []string{a.ID}) {
			t.Errorf("Lease after Release = %v, want [%s] at once", got, a.ID)
		}
		wantErr(t, "Release twice", h.s.Release(h.ctx, ls[0]), outbox.ErrLeaseLost)
		_, err := h.s.RecordAttempt(h.ctx, ls[0], h.attemptWith(sent(rcptA)))
		wantErr(t, "RecordAttempt after Release", err, outbox.ErrLeaseLost)
	})

	t.Run("finished answers leave the queue", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		b := h.accept(spec{})
		h.mustAttempt(a.ID, sent(rcptA))
		h.mustAttempt(b.ID, perm(rcptA))
		h.clock.Advance(24 * time.Hour)
		if got, _ := h.leaseIDs("w1", 10, time.Minute); len(got) != 0 {
			t.Errorf("Lease = %v, want none: sent and not delivered answers are not queued", got)
		}
	})

	t.Run("empty queue", func(t *testing.T) {
		h := newHarness(t, open)
		ls, err := h.s.Lease(h.ctx, "w1", 10, time.Minute)
		if err != nil || len(ls) != 0 {
			t.Errorf("Lease on an empty store = %d leases, %v; want none, nil", len(ls), err)
		}
	})
}
