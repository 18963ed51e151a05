// Package storetest is the conformance suite of the outbox.Store contract
// (outbox/store.go). Every engine runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock outbox.Clock) outbox.Store { ... })
//	}
//
// Each case opens a fresh, empty store, drives it into a known state through
// the Store methods only, applies one action and compares the state after
// with the state the contract and the state machine of package outbox
// (SPEC section 2) promise. Time-dependent cases move a fake Clock instead of
// sleeping. The concurrency cases run a bounded number of goroutines against
// one store: two workers never hold one lease, two consumers never hold one
// event, concurrent transitions emit exactly one event each, and answers
// accepted in parallel are all there.
//
// Bench measures accept → lease → record sent with 8 goroutines, so both
// engines report comparable figures.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// Start is the time the fake clock of every case starts at.
var Start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// Opener opens a fresh, empty store that reads time from clock and
// registers its own cleanup with t.
type Opener func(t *testing.T, clock outbox.Clock) outbox.Store

// Run runs every conformance case as a subtest of t. Each case calls open
// for a fresh, empty store.
func Run(t *testing.T, open func(t *testing.T, clock outbox.Clock) outbox.Store) {
	groups := []struct {
		name string
		run  func(t *testing.T, open Opener)
	}{
		{"Accept", testAccept},
		{"Get", testGet},
		{"Lookup", testLookup},
		{"List", testList},
		{"Lease", testLease},
		{"Transitions", testTransitions},
		{"RecordAttempt", testRecordAttempt},
		{"MarkDelayed", testMarkDelayed},
		{"RecordReport", testRecordReport},
		{"Resend", testResend},
		{"Unmatched", testUnmatched},
		{"QueueStats", testQueueStats},
		{"Events", testEvents},
		{"DeadLetters", testDeadLetters},
		{"Endpoints", testEndpoints},
		{"Expire", testExpire},
		{"PingClose", testPingClose},
		{"Concurrency", testConcurrency},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) { g.run(t, open) })
	}
}

// harness is one case's store, clock and helpers.
type harness struct {
	t     *testing.T
	s     outbox.Store
	clock *Clock
	ctx   context.Context
	n     int // answers accepted, for default references
}

func newHarness(t *testing.T, open Opener) *harness {
	t.Helper()
	c := NewClock(Start)
	s := open(t, c.Now)
	if s == nil {
		t.Fatal("open returned a nil store")
	}
	return &harness{t: t, s: s, clock: c, ctx: context.Background()}
}

// spec describes an answer to accept; zero fields get defaults.
type spec struct {
	id        string
	rcpts     []string
	ticket    string // "-" for none
	ref       string // "-" for none
	messageID string
	body      []byte
	noAdvance bool // do not move the clock 1ms after accepting
}

const (
	rcptA = "ann@customer.example"
	rcptB = "bob@customer.example"
	rcptC = "cid@customer.example"
)

// newAnswer builds the record of sp as the relay would before Accept.
func (h *harness) newAnswer(sp spec) *outbox.Answer {
	h.t.Helper()
	h.n++
	now := h.clock.Now()
	if sp.id == "" {
		sp.id = outbox.NewID(now)
	}
	if sp.rcpts == nil {
		sp.rcpts = []string{rcptA}
	}
	ticket, ref := sp.ticket, sp.ref
	switch ticket {
	case "":
		ticket = fmt.Sprintf("T-%d", h.n)
	case "-":
		ticket = ""
	}
	switch ref {
	case "":
		ref = fmt.Sprintf("R-%d", h.n)
	case "-":
		ref = ""
	}
	a, err := outbox.NewAnswer(sp.id, "agent@helpdesk.example", sp.rcpts, now)
	if err != nil {
		h.t.Fatalf("NewAnswer: %v", err)
	}
	a.SetReferences(ticket, ref)
	a.MessageID = sp.messageID
	if a.MessageID == "" {
		a.MessageID = sp.id + "@helpdesk.example"
	}
	a.Subject = fmt.Sprintf("Re: [#%s] your question", ticket)
	a.Submitter = "helpdesk"
	a.Headers = []outbox.Header{{Name: "Subject", Value: a.Subject}, {Name: "Message-ID", Value: "<" + a.MessageID + ">"}}
	return a
}

func defaultBody(id string) []byte {
	return []byte("X-Answer-Relay-ID: " + id + "\r\nSubject: hello\r\n\r\nThank you for your question.\r\n")
}

// accept stores a new answer and moves the clock on by 1ms so the next id
// sorts after it.
func (h *harness) accept(sp spec) *outbox.Answer {
	h.t.Helper()
	a := h.newAnswer(sp)
	body := sp.body
	if body == nil {
		body = defaultBody(a.ID)
	}
	if err := h.s.Accept(h.ctx, a, bytes.NewReader(body)); err != nil {
		h.t.Fatalf("Accept(%s): %v", a.ID, err)
	}
	if !sp.noAdvance {
		h.clock.Advance(time.Millisecond)
	}
	return h.get(a.ID)
}

func (h *harness) get(id string) *outbox.Answer {
	h.t.Helper()
	a, err := h.s.Get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	if a.ID != id {
		h.t.Fatalf("Get(%s) returned answer %s", id, a.ID)
	}
	checkEvents(h.t, a)
	return a
}

// lease leases the answer id for owner (among whatever else is due) and
// releases every other answer leased on the way. It fails the test if id
// is not handed out.
func (h *harness) lease(owner, id string) *outbox.Lease {
	h.t.Helper()
	ls, err := h.s.Lease(h.ctx, owner, 500, time.Minute)
	if err != nil {
		h.t.Fatalf("Lease: %v", err)
	}
	var got *outbox.Lease
	for _, l := range ls {
		if l.Answer != nil && l.Answer.ID == id {
			got = l
			continue
		}
		if err := h.s.Release(h.ctx, l); err != nil {
			h.t.Fatalf("Release: %v", err)
		}
	}
	if got == nil {
		h.t.Fatalf("Lease did not hand out %s (got %d leases)", id, len(ls))
	}
	return got
}

// leasedIDs leases up to max answers for owner and returns their ids in
// the order handed out, with the leases.
func (h *harness) leaseIDs(owner string, max int, ttl time.Duration) ([]string, []*outbox.Lease) {
	h.t.Helper()
	ls, err := h.s.Lease(h.ctx, owner, max, ttl)
	if err != nil {
		h.t.Fatalf("Lease(%s, %d): %v", owner, max, err)
	}
	var ids []string
	for _, l := range ls {
		if l.Owner != owner {
			h.t.Errorf("lease owner = %q, want %q", l.Owner, owner)
		}
		if l.Token == "" {
			h.t.Errorf("lease of %s has no token", l.Answer.ID)
		}
		if want := h.clock.Now().Add(ttl); !l.Until.Equal(want) {
			h.t.Errorf("lease until = %v, want now+ttl = %v", l.Until, want)
		}
		ids = append(ids, l.Answer.ID)
	}
	return ids, ls
}

// Outcome helpers.
func sent(addr string) outbox.RecipientOutcome {
	return outbox.RecipientOutcome{Address: addr, Kind: outbox.OutcomeSent, Code: 250, Enhanced: "2.0.0", Text: "queued as 4F2A"}
}

func temp(addr string) outbox.RecipientOutcome {
	return outbox.RecipientOutcome{Address: addr, Kind: outbox.OutcomeTemporary, Code: 451, Enhanced: "4.7.1", Text: "try again later"}
}

func perm(addr string) outbox.RecipientOutcome {
	return outbox.RecipientOutcome{Address: addr, Kind: outbox.OutcomePermanent, Code: 550, Enhanced: "5.1.1", Text: "user unknown", Reason: "rejected"}
}

// retryIn is how far in the future attempts with a temporary outcome are
// rescheduled by attempt.
const retryIn = 10 * time.Minute

// attemptWith builds an attempt made now; with a temporary outcome it is
// rescheduled retryIn from now.
func (h *harness) attemptWith(outcomes ...outbox.RecipientOutcome) outbox.Attempt {
	now := h.clock.Now()
	att := outbox.Attempt{StartedAt: now, Duration: 1200 * time.Millisecond, Upstream: "smtp.upstream.example:587", Outcomes: outcomes}
	for _, o := range outcomes {
		if o.Kind == outbox.OutcomeTemporary {
			att.NextAttemptAt = now.Add(retryIn)
		}
	}
	return att
}

// attempt leases answer id and records an attempt with the outcomes.
func (h *harness) attempt(id string, outcomes ...outbox.RecipientOutcome) (*outbox.Answer, error) {
	h.t.Helper()
	l := h.lease("worker-1", id)
	return h.s.RecordAttempt(h.ctx, l, h.attemptWith(outcomes...))
}

// mustAttempt is attempt that fails the test on error.
func (h *harness) mustAttempt(id string, outcomes ...outbox.RecipientOutcome) *outbox.Answer {
	h.t.Helper()
	a, err := h.attempt(id, outcomes...)
	if err != nil {
		h.t.Fatalf("RecordAttempt(%s): %v", id, err)
	}
	checkEvents(h.t, a)
	return a
}

var reportN atomic.Int64

// report builds a DSN report with one recipient per address and the given
// action ("failed", "delayed", "delivered").
func (h *harness) report(action string, addrs ...string) outbox.Report {
	rep := outbox.Report{
		ID: fmt.Sprintf("rep-%d-%d", reportN.Add(1), h.clock.Now().UnixNano()), ReceivedAt: h.clock.Now(),
		Source: outbox.SourceSMTP, Kind: "dsn", ReportingMTA: "mx.customer.example",
	}
	for _, a := range addrs {
		rr := outbox.ReportRecipient{Address: a, Action: action, RemoteMTA: "mx.customer.example"}
		switch action {
		case "failed":
			rr.Status, rr.ReplyCode, rr.Diagnostic, rr.Reason, rr.Hard = "5.1.1", 550, "550 5.1.1 no such user", "userunknown", true
		case "delayed":
			rr.Status, rr.Diagnostic, rr.Reason = "4.4.7", "still trying", "expired"
		case "delivered":
			rr.Status = "2.0.0"
		}
		rep.Recipients = append(rep.Recipients, rr)
	}
	return rep
}

func (h *harness) mustReport(id string, rep outbox.Report) *outbox.Answer {
	h.t.Helper()
	a, err := h.s.RecordReport(h.ctx, id, rep, []byte("raw "+rep.ID))
	if err != nil {
		h.t.Fatalf("RecordReport(%s, %s): %v", id, rep.ID, err)
	}
	checkEvents(h.t, a)
	return a
}

func (h *harness) queueLen() int {
	h.t.Helper()
	qs, err := h.s.QueueStats(h.ctx)
	if err != nil {
		h.t.Fatalf("QueueStats: %v", err)
	}
	return qs.Length
}

// checkEvents checks that a's events are numbered 1..n with stable ids.
func checkEvents(t *testing.T, a *outbox.Answer) {
	t.Helper()
	for i, e := range a.Events {
		seq := int64(i + 1)
		if e.Seq != seq || e.ID != outbox.EventID(a.ID, seq) || e.AnswerID != a.ID {
			t.Errorf("answer %s event %d = {id %q seq %d answer %q}, want {id %q seq %d}", a.ID, i, e.ID, e.Seq, e.AnswerID, outbox.EventID(a.ID, seq), seq)
		}
	}
}

// eventTypes returns the types of events.
func eventTypes(es []outbox.Event) []outbox.EventType {
	out := []outbox.EventType{}
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}

// newEvents returns the events of after that before did not have.
func newEvents(before, after *outbox.Answer) []outbox.EventType {
	if len(after.Events) < len(before.Events) {
		return []outbox.EventType{"<events lost>"}
	}
	return eventTypes(after.Events[len(before.Events):])
}

// sameRecord reports whether two records are equal apart from Version.
func sameRecord(a, b *outbox.Answer) bool {
	ca, cb := a.Clone(), b.Clone()
	ca.Version, cb.Version = 0, 0
	return bytes.Equal(mustJSON(ca), mustJSON(cb))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// unchanged fails the test unless answer id is exactly as before: same
// record, same version.
func (h *harness) unchanged(before *outbox.Answer) {
	h.t.Helper()
	after := h.get(before.ID)
	if after.Version != before.Version || !sameRecord(before, after) {
		h.t.Errorf("answer %s changed by a failed call:\nbefore %s\nafter  %s", before.ID, mustJSON(before), mustJSON(after))
	}
}

// wantErr fails the test unless err is want (nil for none).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error = %v, want %v", what, err, want)
	}
}

// wantOneOf fails the test unless err is one of wants.
func wantOneOf(t *testing.T, what string, err error, wants ...error) {
	t.Helper()
	for _, w := range wants {
		if errors.Is(err, w) {
			return
		}
	}
	t.Errorf("%s: error = %v, want one of %v", what, err, wants)
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return b
}

func ids(as []*outbox.Answer) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func reversed(s []string) []string {
	c := slices.Clone(s)
	slices.Reverse(c)
	return c
}
