package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
)

// TestLookupOwnID checks Lookup of a reference equal to an answer's own id,
// which has no index entry: the answer with that id is found, unless a newer
// answer carries the same reference (in the index), and an older one that
// does loses to it.
func TestLookupOwnID(t *testing.T) {
	srv := redistest.Start(t)
	open := opener(srv.Client(), 0)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clock := t0
	s := open(t, func() time.Time { return clock })
	accept := func(id, envID string, at time.Time) *outbox.Answer {
		t.Helper()
		a, err := outbox.NewAnswer(id, "agent@helpdesk.example", []string{"ann@customer.example"}, at)
		if err != nil {
			t.Fatal(err)
		}
		a.SetReferences("T-1", id)
		if envID != "" {
			a.EnvelopeID = envID
		}
		if err := s.Accept(ctx, a, strings.NewReader("hi")); err != nil {
			t.Fatal(err)
		}
		return a
	}
	lookup := func(key outbox.LookupKey, value, want string) {
		t.Helper()
		a, err := s.Lookup(ctx, key, value)
		if err != nil {
			t.Fatalf("lookup %s %s: %v", key, value, err)
		}
		if a.ID != want {
			t.Fatalf("lookup %s %s = %s, want %s", key, value, a.ID, want)
		}
	}
	old := accept("old-envelope", "x", t0)       // indexed under envelope id x, older
	self := accept("x", "", t0.Add(time.Second)) // envelope id x = its id: not indexed
	lookup(outbox.ByEnvelopeID, "x", self.ID)    // own id newer than the index entry
	lookup(outbox.ByAnswerRef, "x", self.ID)     // answer ref = id
	lookup(outbox.ByAnswerRef, "old-envelope", old.ID)
	if _, err := s.Lookup(ctx, outbox.ByEnvelopeID, "old-envelope"); err == nil {
		t.Fatal("lookup by envelope id old-envelope found an answer; its envelope id is x")
	}
	newer := accept("newer", "x", t0.Add(2*time.Second))
	lookup(outbox.ByEnvelopeID, "x", newer.ID) // the index entry is newer
	if _, err := s.Lookup(ctx, outbox.ByMessageID, "x"); err == nil {
		t.Fatal("lookup by message id x found an answer; none has that message id")
	}
}
