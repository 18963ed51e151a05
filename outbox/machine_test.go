package outbox

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

const (
	ann = "ann@customer.example"
	bob = "bob@customer.example"
)

// answerIn returns an accepted answer whose recipients are in the given
// statuses (ann first, then bob), as the machine would have left them.
func answerIn(t *testing.T, ticket string, statuses ...Status) *Answer {
	t.Helper()
	rcpts := []string{ann, bob}[:len(statuses)]
	a, err := NewAnswer("01ANSWER", "agent@helpdesk.example", rcpts, t0)
	if err != nil {
		t.Fatal(err)
	}
	a.SetReferences(ticket, "R-1")
	for i, st := range statuses {
		r := &a.Recipients[i]
		r.Status = st
		if st == StatusSent || st == StatusDelivered {
			r.SentAt = t0
		}
	}
	a.settle(t0, "", nil)
	if !a.Queued() {
		a.NextAttemptAt = time.Time{}
	}
	a.Events = a.Events[:1] // keep only answer.scheduled: the tests look at new events
	a.Reopened = false
	return a
}

func types(es []Event) []EventType {
	out := []EventType{}
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}

func rstatuses(a *Answer) []Status {
	var out []Status
	for _, r := range a.Recipients {
		out = append(out, r.Status)
	}
	return out
}

func TestNewAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		id      string
		rcpts   []string
		want    []string
		wantErr error
	}{
		{"one recipient", "01A", []string{ann}, []string{ann}, nil},
		{"repeated recipient kept once", "01A", []string{ann, bob, strings.ToUpper(ann)}, []string{ann, bob}, nil},
		{"no recipient", "01A", nil, nil, ErrInvalid},
		{"no id", "", []string{ann}, nil, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAnswer(tc.id, "agent@helpdesk.example", tc.rcpts, t0)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			var got []string
			for _, r := range a.Recipients {
				got = append(got, r.Address)
				if r.Status != StatusScheduled || !r.Since.Equal(t0) {
					t.Errorf("recipient %s: %s since %v", r.Address, r.Status, r.Since)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("recipients = %v, want %v", got, tc.want)
			}
			if a.Status != StatusScheduled || a.EnvelopeID != tc.id || !a.NextAttemptAt.Equal(t0) || !a.QueuedAt.Equal(t0) || !a.Queued() || !a.Awaiting() {
				t.Errorf("new answer: %+v", a)
			}
			if len(a.Events) != 1 || a.Events[0].Type != EventScheduled || a.Events[0].Seq != 1 || a.Events[0].ID != EventID(tc.id, 1) {
				t.Errorf("events = %+v, want answer.scheduled seq 1", a.Events)
			}
		})
	}
}

func TestCanTransition(t *testing.T) {
	legal := map[[2]Status]bool{
		{StatusScheduled, StatusSent}: true, {StatusScheduled, StatusDelayed}: true, {StatusScheduled, StatusNotDelivered}: true,
		{StatusDelayed, StatusSent}: true, {StatusDelayed, StatusNotDelivered}: true, {StatusDelayed, StatusDelivered}: true,
		{StatusSent, StatusDelayed}: true, {StatusSent, StatusNotDelivered}: true, {StatusSent, StatusDelivered}: true,
		{StatusDelivered, StatusNotDelivered}: true,
		{StatusNotDelivered, StatusScheduled}: true,
	}
	for _, from := range Statuses {
		for _, to := range Statuses {
			if got := CanTransition(from, to); got != legal[[2]Status{from, to}] {
				t.Errorf("CanTransition(%s, %s) = %v", from, to, got)
			}
		}
	}
}

func TestWorst(t *testing.T) {
	for _, tc := range []struct {
		in   []Status
		want Status
	}{
		{nil, ""},
		{[]Status{StatusDelivered}, StatusDelivered},
		{[]Status{StatusDelivered, StatusSent}, StatusSent},
		{[]Status{StatusSent, StatusScheduled}, StatusScheduled},
		{[]Status{StatusScheduled, StatusDelayed, StatusSent}, StatusDelayed},
		{[]Status{StatusDelivered, StatusNotDelivered, StatusDelayed}, StatusNotDelivered},
	} {
		if got := Worst(tc.in...); got != tc.want {
			t.Errorf("Worst(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStatusNames(t *testing.T) {
	for _, s := range Statuses {
		if p, err := ParseStatus(string(s)); p != s || err != nil || s.Label() == "" {
			t.Errorf("ParseStatus(%s) = %q, %v; label %q", s, p, err, s.Label())
		}
	}
	if _, err := ParseStatus("bounced"); err == nil {
		t.Error("ParseStatus(bounced) succeeded")
	}
}

func out(addr string, k OutcomeKind) RecipientOutcome {
	o := RecipientOutcome{Address: addr, Kind: k}
	if k == OutcomePermanent {
		o.Code, o.Enhanced, o.Text, o.Reason = 550, "5.1.1", "user unknown", "rejected"
	}
	return o
}

func TestApplyAttempt(t *testing.T) {
	next := t0.Add(time.Hour)
	now := t0.Add(time.Minute)
	for _, tc := range []struct {
		name       string
		ticket     string
		before     []Status
		outcomes   []RecipientOutcome
		next       time.Time
		wantErr    error
		want       []Status
		wantEvents []EventType
		wantQueued bool
		wantReport bool
	}{
		{name: "sent", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeSent)},
			want: []Status{StatusSent}, wantEvents: []EventType{EventSent}},
		{name: "temporary", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeTemporary)}, next: next,
			want: []Status{StatusScheduled}, wantEvents: []EventType{}, wantQueued: true},
		{name: "permanent with ticket", ticket: "T-1", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomePermanent)},
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered, EventTicketReopen}, wantReport: true},
		{name: "permanent without ticket", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomePermanent)},
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered}, wantReport: true},
		{name: "delayed then sent", before: []Status{StatusDelayed}, outcomes: []RecipientOutcome{out(ann, OutcomeSent)},
			want: []Status{StatusSent}, wantEvents: []EventType{EventSent}},
		{name: "one sent, one temporary", before: []Status{StatusScheduled, StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeSent), out(bob, OutcomeTemporary)}, next: next,
			want: []Status{StatusSent, StatusScheduled}, wantEvents: []EventType{}, wantQueued: true},
		{name: "one sent, one permanent", ticket: "T-1", before: []Status{StatusScheduled, StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeSent), out(bob, OutcomePermanent)},
			want: []Status{StatusSent, StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered, EventTicketReopen}, wantReport: true},
		{name: "outcome for a sent recipient", before: []Status{StatusSent, StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeSent)}, wantErr: ErrIllegalTransition},
		{name: "outcome for a stranger", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out("eve@x.example", OutcomeSent)}, wantErr: ErrIllegalTransition},
		{name: "unknown outcome kind", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, "maybe")}, wantErr: ErrInvalid},
		{name: "temporary without next attempt", before: []Status{StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeTemporary)}, wantErr: ErrInvalid},
		{name: "no outcome for a pending recipient, no next attempt", before: []Status{StatusScheduled, StatusScheduled}, outcomes: []RecipientOutcome{out(ann, OutcomeSent)}, wantErr: ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := answerIn(t, tc.ticket, tc.before...)
			orig := a.Clone()
			es, err := a.ApplyAttempt(Attempt{StartedAt: now, Upstream: "smtp.upstream.example", Outcomes: tc.outcomes, NextAttemptAt: tc.next}, now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if string(mustMarshal(a)) != string(mustMarshal(orig)) {
					t.Errorf("a failed attempt changed the answer:\nbefore %s\nafter  %s", mustMarshal(orig), mustMarshal(a))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := rstatuses(a); !slices.Equal(got, tc.want) {
				t.Errorf("recipients = %v, want %v", got, tc.want)
			}
			if got := types(es); !slices.Equal(got, tc.wantEvents) {
				t.Errorf("events = %v, want %v", got, tc.wantEvents)
			}
			if !slices.Equal(types(a.Events[1:]), types(es)) {
				t.Errorf("returned events %v are not the ones appended %v", types(es), types(a.Events[1:]))
			}
			if a.Queued() != tc.wantQueued {
				t.Errorf("queued = %v, want %v", a.Queued(), tc.wantQueued)
			}
			if tc.wantQueued && !a.NextAttemptAt.Equal(tc.next) || !tc.wantQueued && !a.NextAttemptAt.IsZero() {
				t.Errorf("next attempt = %v", a.NextAttemptAt)
			}
			if (len(a.Reports) == 1) != tc.wantReport {
				t.Errorf("reports = %+v, want one: %v", a.Reports, tc.wantReport)
			}
			if len(a.Attempts) != 1 || a.Attempts[0].Number != 1 {
				t.Errorf("attempts = %+v", a.Attempts)
			}
		})
	}
}

func mustMarshal(a *Answer) []byte {
	c := a.Clone()
	b, _ := jsonMarshal(c)
	return b
}

func rep(id, action string, addrs ...string) Report {
	r := Report{ID: id, Kind: "dsn", Source: SourceSMTP}
	for _, a := range addrs {
		r.Recipients = append(r.Recipients, ReportRecipient{Address: a, Action: action, Status: "5.1.1", Reason: "userunknown"})
	}
	return r
}

func TestApplyReport(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tc := range []struct {
		name       string
		ticket     string
		before     []Status
		report     Report
		wantErr    error
		want       []Status
		wantEvents []EventType
		wantQueued bool
	}{
		{name: "failed after sent", ticket: "T-1", before: []Status{StatusSent}, report: rep("r", "failed", ann),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered, EventTicketReopen}},
		{name: "failed without ticket", before: []Status{StatusSent}, report: rep("r", "failed", ann),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered}},
		{name: "delayed after sent is not queued again", ticket: "T-1", before: []Status{StatusSent}, report: rep("r", "delayed", ann),
			want: []Status{StatusDelayed}, wantEvents: []EventType{EventDelayed}},
		{name: "delivered after sent", before: []Status{StatusSent}, report: rep("r", "delivered", ann),
			want: []Status{StatusDelivered}, wantEvents: []EventType{EventDelivered}},
		{name: "late bounce after delivered", ticket: "T-1", before: []Status{StatusDelivered}, report: rep("r", "failed", ann),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered, EventTicketReopen}},
		{name: "delay after failure is skipped", before: []Status{StatusNotDelivered}, report: rep("r", "delayed", ann),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{}},
		{name: "feedback changes nothing", before: []Status{StatusSent}, report: Report{ID: "r", Kind: ReportKindFeedback, Recipients: []ReportRecipient{{Address: ann, Action: "failed"}}},
			want: []Status{StatusSent}, wantEvents: []EventType{}},
		{name: "unknown action ignored", before: []Status{StatusSent}, report: rep("r", "relayed", ann),
			want: []Status{StatusSent}, wantEvents: []EventType{}},
		{name: "forwarded address, one recipient", before: []Status{StatusSent}, report: rep("r", "failed", "ann.final@forward.example"),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered}},
		{name: "stranger with two recipients applies to nobody", before: []Status{StatusSent, StatusSent}, report: rep("r", "failed", "eve@x.example"),
			want: []Status{StatusSent, StatusSent}, wantEvents: []EventType{}},
		{name: "one of two failed", ticket: "T-1", before: []Status{StatusSent, StatusSent}, report: rep("r", "failed", bob),
			want: []Status{StatusSent, StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered, EventTicketReopen}},
		{name: "failed while scheduled leaves the queue", before: []Status{StatusScheduled}, report: rep("r", "failed", ann),
			want: []Status{StatusNotDelivered}, wantEvents: []EventType{EventNotDelivered}},
		{name: "delayed while scheduled stays queued", before: []Status{StatusScheduled}, report: rep("r", "delayed", ann),
			want: []Status{StatusDelayed}, wantEvents: []EventType{EventDelayed}, wantQueued: true},
		{name: "no id", before: []Status{StatusSent}, report: rep("", "failed", ann), wantErr: ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := answerIn(t, tc.ticket, tc.before...)
			es, err := a.ApplyReport(tc.report, now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := rstatuses(a); !slices.Equal(got, tc.want) {
				t.Errorf("recipients = %v, want %v", got, tc.want)
			}
			if got := types(es); !slices.Equal(got, tc.wantEvents) {
				t.Errorf("events = %v, want %v", got, tc.wantEvents)
			}
			if a.Queued() != tc.wantQueued {
				t.Errorf("queued = %v, want %v", a.Queued(), tc.wantQueued)
			}
			if len(a.Reports) != 1 {
				t.Errorf("%d reports kept, want 1", len(a.Reports))
			}
			for _, e := range es {
				if e.Report == nil || e.Report.ReportID != tc.report.ID {
					t.Errorf("event %s carries report %+v", e.Type, e.Report)
				}
			}
			// The same report again is a duplicate and changes nothing.
			before := mustMarshal(a)
			if _, err := a.ApplyReport(tc.report, now.Add(time.Minute)); !errors.Is(err, ErrDuplicate) {
				t.Errorf("same report again: %v, want ErrDuplicate", err)
			}
			if string(mustMarshal(a)) != string(before) {
				t.Error("a duplicate report changed the answer")
			}
		})
	}
}

func TestReopenOncePerEpisode(t *testing.T) {
	a := answerIn(t, "T-1", StatusSent, StatusSent)
	var all []EventType
	step := func(es []Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, types(es)...)
	}
	step(a.ApplyReport(rep("r1", "failed", ann), t0))
	step(a.ApplyReport(rep("r2", "failed", bob), t0))
	step(a.Resend(t0.Add(time.Hour)))
	if !slices.Equal(a.PendingRecipients(), []string{ann, bob}) || a.Reopened || a.Recipients[0].SentAt != (time.Time{}) {
		t.Fatalf("after Resend: pending %v, reopened %v, sent at %v", a.PendingRecipients(), a.Reopened, a.Recipients[0].SentAt)
	}
	step(a.ApplyAttempt(Attempt{Outcomes: []RecipientOutcome{out(ann, OutcomePermanent), out(bob, OutcomeSent)}}, t0.Add(2*time.Hour)))
	want := []EventType{EventNotDelivered, EventTicketReopen, EventScheduled, EventNotDelivered, EventTicketReopen}
	if !slices.Equal(all, want) {
		t.Errorf("events = %v, want %v", all, want)
	}
	for i, e := range a.Events {
		if e.Seq != int64(i+1) || e.ID != EventID(a.ID, e.Seq) {
			t.Errorf("event %d: seq %d id %s", i, e.Seq, e.ID)
		}
	}
}

func TestMarkDelayedAndResend(t *testing.T) {
	now := t0.Add(4 * time.Hour)
	for _, tc := range []struct {
		name        string
		before      []Status
		wantMark    []EventType
		wantAfter   []Status
		resendError error
	}{
		{"scheduled", []Status{StatusScheduled}, []EventType{EventDelayed}, []Status{StatusDelayed}, ErrIllegalTransition},
		{"sent", []Status{StatusSent}, []EventType{}, []Status{StatusSent}, ErrIllegalTransition},
		{"one of two sent", []Status{StatusSent, StatusScheduled}, []EventType{EventDelayed}, []Status{StatusSent, StatusDelayed}, ErrIllegalTransition},
		{"one failed, one scheduled: no event", []Status{StatusNotDelivered, StatusScheduled}, []EventType{}, []Status{StatusNotDelivered, StatusDelayed}, nil},
		{"already delayed", []Status{StatusDelayed}, []EventType{}, []Status{StatusDelayed}, ErrIllegalTransition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := answerIn(t, "T-1", tc.before...)
			if got := types(a.MarkDelayed(now)); !slices.Equal(got, tc.wantMark) {
				t.Errorf("MarkDelayed events = %v, want %v", got, tc.wantMark)
			}
			if got := rstatuses(a); !slices.Equal(got, tc.wantAfter) {
				t.Errorf("recipients = %v, want %v", got, tc.wantAfter)
			}
			if got := types(a.MarkDelayed(now)); len(got) != 0 {
				t.Errorf("MarkDelayed twice emitted %v", got)
			}
			orig := mustMarshal(a)
			_, err := a.Resend(now)
			if !errors.Is(err, tc.resendError) || (err == nil) != (tc.resendError == nil) {
				t.Errorf("Resend = %v, want %v", err, tc.resendError)
			}
			if err != nil && string(mustMarshal(a)) != string(orig) {
				t.Error("a failed Resend changed the answer")
			}
		})
	}
}

func TestCaps(t *testing.T) {
	a := answerIn(t, "", StatusScheduled)
	for i := range MaxAttemptsKept + 5 {
		if _, err := a.ApplyAttempt(Attempt{Outcomes: []RecipientOutcome{out(ann, OutcomeTemporary)}, NextAttemptAt: t0.Add(time.Duration(i+1) * time.Minute)}, t0); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.Attempts) != MaxAttemptsKept || a.Attempts[len(a.Attempts)-1].Number != MaxAttemptsKept+5 || a.Attempts[0].Number != 6 {
		t.Errorf("%d attempts kept, numbered %d..%d", len(a.Attempts), a.Attempts[0].Number, a.Attempts[len(a.Attempts)-1].Number)
	}
	for i := range MaxReportsKept + 3 {
		if _, err := a.ApplyReport(Report{ID: EventID("fb", int64(i)), Kind: ReportKindAutoReply}, t0); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.Reports) != MaxReportsKept || a.Reports[0].ID != EventID("fb", 3) {
		t.Errorf("%d reports kept, first %s", len(a.Reports), a.Reports[0].ID)
	}
}

func TestSetReferences(t *testing.T) {
	a, _ := NewAnswer("01A", "s@x.example", []string{ann}, t0)
	a.SetReferences("T-9", "R-9")
	if e := a.Events[0]; e.TicketID != "T-9" || e.AnswerRef != "R-9" {
		t.Errorf("answer.scheduled carries %q/%q, want T-9/R-9", e.TicketID, e.AnswerRef)
	}
}

var jsonMarshal = func(v any) ([]byte, error) { return json.Marshal(v) }
