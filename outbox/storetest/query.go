package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func testGet(t *testing.T, open Opener) {
	t.Run("unknown id", func(t *testing.T) {
		h := newHarness(t, open)
		h.accept(spec{})
		for _, id := range []string{outbox.NewID(Start), "", "no-such-answer"} {
			_, err := h.s.Get(h.ctx, id)
			wantErr(t, "Get("+id+")", err, outbox.ErrNotFound)
		}
	})
	t.Run("returns a copy", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{})
		a.Status = outbox.StatusDelivered
		a.Recipients[0].Address = "changed@example.org"
		if got := h.get(a.ID); got.Status != outbox.StatusScheduled || got.Recipients[0].Address != rcptA {
			t.Errorf("changing a returned record changed the stored one: %s", mustJSON(got))
		}
	})
}

func testLookup(t *testing.T, open Opener) {
	h := newHarness(t, open)
	older := h.accept(spec{ref: "ref-shared", messageID: "m1@helpdesk.example"})
	h.clock.Advance(time.Second)
	newer := h.accept(spec{ref: "ref-shared", messageID: "m2@helpdesk.example"})
	other := h.accept(spec{ref: "ref-other", messageID: "m3@helpdesk.example"})
	noRefs := h.accept(spec{ref: "-", ticket: "-"})
	_ = noRefs
	for _, tc := range []struct {
		name  string
		key   outbox.LookupKey
		value string
		want  string // answer id; "" for ErrNotFound
	}{
		{"answer ref", outbox.ByAnswerRef, "ref-other", other.ID},
		{"answer ref, most recent of two", outbox.ByAnswerRef, "ref-shared", newer.ID},
		{"message id", outbox.ByMessageID, "m1@helpdesk.example", older.ID},
		{"message id of the newer", outbox.ByMessageID, "m2@helpdesk.example", newer.ID},
		{"envelope id", outbox.ByEnvelopeID, other.EnvelopeID, other.ID},
		{"envelope id defaults to the id", outbox.ByEnvelopeID, older.ID, older.ID},
		{"unknown answer ref", outbox.ByAnswerRef, "ref-none", ""},
		{"unknown message id", outbox.ByMessageID, "none@helpdesk.example", ""},
		{"unknown envelope id", outbox.ByEnvelopeID, outbox.NewID(Start), ""},
		{"empty answer ref", outbox.ByAnswerRef, "", ""},
		{"key of another kind", outbox.ByMessageID, "ref-other", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			got, err := h.s.Lookup(h.ctx, tc.key, tc.value)
			if tc.want == "" {
				wantErr(t, "Lookup", err, outbox.ErrNotFound)
				return
			}
			wantErr(t, "Lookup", err, nil)
			if got.ID != tc.want {
				t.Errorf("Lookup(%s, %q) = %s, want %s", tc.key, tc.value, got.ID, tc.want)
			}
		})
	}
}

func testList(t *testing.T, open Opener) {
	t.Run("filters", func(t *testing.T) {
		h := newHarness(t, open)
		// a0..a5, accepted 1h apart; a0 and a1 on ticket T-x.
		var all []*outbox.Answer
		for i := range 6 {
			ticket := ""
			if i < 2 {
				ticket = "T-x"
			}
			all = append(all, h.accept(spec{ticket: ticket}))
			h.clock.Advance(time.Hour)
		}
		h.mustAttempt(all[0].ID, sent(rcptA))
		h.mustAttempt(all[2].ID, sent(rcptA))
		h.mustAttempt(all[3].ID, perm(rcptA))
		id := func(is ...int) []string {
			var out []string
			for _, i := range is {
				out = append(out, all[i].ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    outbox.Filter
			want []string // newest first
		}{
			{"everything", outbox.Filter{}, id(5, 4, 3, 2, 1, 0)},
			{"status sent", outbox.Filter{Status: outbox.StatusSent}, id(2, 0)},
			{"status scheduled", outbox.Filter{Status: outbox.StatusScheduled}, id(5, 4, 1)},
			{"status not delivered", outbox.Filter{Status: outbox.StatusNotDelivered}, id(3)},
			{"status delivered", outbox.Filter{Status: outbox.StatusDelivered}, nil},
			{"ticket", outbox.Filter{TicketID: "T-x"}, id(1, 0)},
			{"ticket and status", outbox.Filter{TicketID: "T-x", Status: outbox.StatusSent}, id(0)},
			{"unknown ticket", outbox.Filter{TicketID: "T-none"}, nil},
			{"accepted from, inclusive", outbox.Filter{AcceptedFrom: all[2].AcceptedAt}, id(5, 4, 3, 2)},
			{"accepted to, exclusive", outbox.Filter{AcceptedTo: all[2].AcceptedAt}, id(1, 0)},
			{"accepted window", outbox.Filter{AcceptedFrom: all[1].AcceptedAt, AcceptedTo: all[4].AcceptedAt}, id(3, 2, 1)},
			{"window and status", outbox.Filter{AcceptedFrom: all[1].AcceptedAt, Status: outbox.StatusScheduled}, id(5, 4, 1)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h.t = t
				for _, limit := range []int{0, 1, 2, 500} {
					f := tc.f
					f.Limit = limit
					got := h.listAll(f, 10)
					if !slices.Equal(got, tc.want) {
						t.Errorf("List(limit %d) = %v, want %v", limit, got, tc.want)
					}
				}
			})
		}
	})

	t.Run("default limit", func(t *testing.T) {
		h := newHarness(t, open)
		for range 55 {
			h.accept(spec{})
		}
		p, err := h.s.List(h.ctx, outbox.Filter{})
		wantErr(t, "List", err, nil)
		if len(p.Answers) != 50 || p.Next == "" {
			t.Fatalf("first page: %d answers, next %q; want 50 and a cursor", len(p.Answers), p.Next)
		}
		p, err = h.s.List(h.ctx, outbox.Filter{Cursor: p.Next})
		wantErr(t, "List", err, nil)
		if len(p.Answers) != 5 || p.Next != "" {
			t.Errorf("second page: %d answers, next %q; want 5 and no cursor", len(p.Answers), p.Next)
		}
	})

	t.Run("cursor while answers arrive", func(t *testing.T) {
		h := newHarness(t, open)
		var want []string
		for range 25 {
			want = append(want, h.accept(spec{}).ID)
		}
		want = reversed(want)
		var got []string
		f := outbox.Filter{Limit: 10}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("paging does not end")
			}
			p, err := h.s.List(h.ctx, f)
			wantErr(t, "List", err, nil)
			got = append(got, ids(p.Answers)...)
			if p.Next == "" {
				break
			}
			// Newer answers arrive, and an answer already listed changes
			// status, between pages.
			for range 3 {
				h.accept(spec{})
			}
			h.mustAttempt(p.Answers[0].ID, sent(rcptA))
			f.Cursor = p.Next
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages = %v\nwant    %v", got, want)
		}
	})

	t.Run("cursor with a status filter", func(t *testing.T) {
		h := newHarness(t, open)
		var want []string
		for i := range 12 {
			a := h.accept(spec{})
			if i%3 == 0 {
				h.mustAttempt(a.ID, sent(rcptA))
				want = append(want, a.ID)
			}
		}
		got := h.listAll(outbox.Filter{Status: outbox.StatusSent, Limit: 1}, 10)
		if !slices.Equal(got, reversed(want)) {
			t.Errorf("pages = %v, want %v", got, reversed(want))
		}
	})
}

// listAll pages through f and returns the ids, failing after maxPages.
func (h *harness) listAll(f outbox.Filter, maxPages int) []string {
	h.t.Helper()
	var out []string
	for page := 0; ; page++ {
		if page >= maxPages {
			h.t.Fatalf("List(%+v): more than %d pages", f, maxPages)
		}
		p, err := h.s.List(h.ctx, f)
		if err != nil {
			h.t.Fatalf("List(%+v): %v", f, err)
		}
		if f.Limit > 0 && len(p.Answers) > f.Limit {
			h.t.Errorf("List(limit %d) returned %d answers", f.Limit, len(p.Answers))
		}
		out = append(out, ids(p.Answers)...)
		if p.Next == "" {
			return out
		}
		f.Cursor = p.Next
	}
}
