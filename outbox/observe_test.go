package outbox_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/storetest"
)

// TestObservedSeesEveryChangeOnce drives one answer through every kind of
// write and checks that the observer saw each event exactly once, in
// order, and nothing for writes that changed nothing.
func TestObservedSeesEveryChangeOnce(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
	inner, err := embedstore.Open(filepath.Join(t.TempDir(), "o.db"), embedstore.Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	var (
		mu   sync.Mutex
		seen []outbox.Event
	)
	s := outbox.Observed(inner, func(_ context.Context, events []outbox.Event) {
		mu.Lock()
		seen = append(seen, events...)
		mu.Unlock()
	})

	a, _ := outbox.NewAnswer(outbox.NewID(clock.Now()), "agent@h.test", []string{"a@x.test", "b@x.test"}, clock.Now())
	a.SetReferences("T-1", "A-1")
	must(t, s.Accept(ctx, a, strings.NewReader("Subject: x\r\n\r\nbody\r\n")))
	leases, err := s.Lease(ctx, "w", 1, time.Minute)
	if err != nil || len(leases) != 1 {
		t.Fatalf("lease: %v", err)
	}
	_, err = s.RecordAttempt(ctx, leases[0], outbox.Attempt{StartedAt: clock.Now(), NextAttemptAt: clock.Now().Add(time.Hour), Outcomes: []outbox.RecipientOutcome{
		{Address: "a@x.test", Kind: outbox.OutcomeSent, Code: 250},
		{Address: "b@x.test", Kind: outbox.OutcomeTemporary, Code: 451},
	}})
	must(t, err)
	clock.Advance(4 * time.Hour)
	if _, err := s.MarkDelayed(ctx, clock.Now().Add(-3*time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	bounce := outbox.Report{ID: "r1", Kind: "dsn", Recipients: []outbox.ReportRecipient{{Address: "a@x.test", Action: "failed", Status: "5.1.1"}}}
	_, err = s.RecordReport(ctx, a.ID, bounce, []byte("raw"))
	must(t, err)
	if _, err := s.RecordReport(ctx, a.ID, bounce, []byte("raw")); err == nil {
		t.Fatal("a duplicate report must fail")
	}
	_, err = s.Resend(ctx, a.ID)
	must(t, err)

	final, err := s.Get(ctx, a.ID)
	must(t, err)
	want := []outbox.EventType{outbox.EventScheduled, outbox.EventDelayed, outbox.EventNotDelivered, outbox.EventTicketReopen, outbox.EventDelayed}
	if len(final.Events) != len(want) || len(seen) != len(want) {
		t.Fatalf("stored %d events, observed %d, want %d: %+v", len(final.Events), len(seen), len(want), seen)
	}
	for i := range want {
		if seen[i].Type != want[i] || seen[i].ID != final.Events[i].ID {
			t.Errorf("observed #%d = %s %s, stored %s, want %s", i, seen[i].Type, seen[i].ID, final.Events[i].ID, want[i])
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
