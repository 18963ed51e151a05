package outbox

import (
	"fmt"
	"strings"
	"time"
)

// NewAnswer returns the record of a freshly accepted answer: every recipient
// scheduled, due at once, with its answer.scheduled event. The caller fills
// in the references and headers before handing it to Store.Accept.
func NewAnswer(id, sender string, recipients []string, now time.Time) (*Answer, error) {
	if id == "" || len(recipients) == 0 {
		return nil, fmt.Errorf("%w: answer needs an id and a recipient", ErrInvalid)
	}
	a := &Answer{
		ID:            id,
		EnvelopeID:    id,
		AcceptedAt:    now,
		QueuedAt:      now,
		Sender:        sender,
		NextAttemptAt: now,
	}
	for _, rcpt := range recipients {
		if a.recipient(rcpt) != nil {
			continue // RCPT TO repeated: deliver once
		}
		a.Recipients = append(a.Recipients, Recipient{Address: rcpt, Status: StatusScheduled, Since: now})
	}
	a.settle(now, "", nil)
	return a, nil
}

// ApplyAttempt records one delivery attempt: each outcome moves its
// recipient (sent → sent, permanent → not_delivered, temporary → unchanged),
// permanent failures become a delivery report from the upstream, and the
// answer is rescheduled at att.NextAttemptAt while any recipient is pending.
// It returns the events of the change.
//
// An outcome for a recipient that is not pending, or not on the answer, is
// ErrIllegalTransition; an unknown outcome kind, or a recipient left
// pending without att.NextAttemptAt, is ErrInvalid. Either way a is left
// unchanged.
func (a *Answer) ApplyAttempt(att Attempt, now time.Time) ([]Event, error) {
	final := map[*Recipient]bool{} // recipients this attempt takes out of the queue
	for _, o := range att.Outcomes {
		r := a.recipient(o.Address)
		if r == nil || !r.Pending() {
			return nil, fmt.Errorf("%w: attempt outcome for %q which is not pending", ErrIllegalTransition, o.Address)
		}
		if o.Kind != OutcomeSent && o.Kind != OutcomeTemporary && o.Kind != OutcomePermanent {
			return nil, fmt.Errorf("%w: outcome kind %q", ErrInvalid, o.Kind)
		}
		if o.Kind != OutcomeTemporary {
			final[r] = true
		}
	}
	if att.NextAttemptAt.IsZero() {
		for i := range a.Recipients {
			if r := &a.Recipients[i]; r.Pending() && !final[r] {
				return nil, fmt.Errorf("%w: %s stays pending and the attempt has no next attempt time", ErrInvalid, r.Address)
			}
		}
	}
	before := len(a.Events)
	att.Number = len(a.Attempts) + 1
	if n := len(a.Attempts); n > 0 {
		att.Number = a.Attempts[n-1].Number + 1
	}
	a.Attempts = appendCapped(a.Attempts, att, MaxAttemptsKept)

	var rejected []ReportRecipient
	reason := ""
	for _, o := range att.Outcomes {
		r := a.recipient(o.Address)
		r.Code, r.Enhanced, r.Text = o.Code, o.Enhanced, o.Text
		switch o.Kind {
		case OutcomeSent:
			r.Status, r.Since, r.SentAt = StatusSent, now, now
		case OutcomePermanent:
			r.Status, r.Since, r.Reason = StatusNotDelivered, now, o.Reason
			reason = o.Reason
			rejected = append(rejected, ReportRecipient{
				Address: o.Address, Action: "failed", Status: o.Enhanced, ReplyCode: o.Code,
				Diagnostic: o.Text, RemoteMTA: att.Upstream, Reason: o.Reason, Hard: true,
			})
		}
	}
	var report *Report
	if len(rejected) > 0 {
		report = &Report{
			ID: fmt.Sprintf("%s-attempt-%d", a.ID, att.Number), ReceivedAt: now,
			Source: SourceUpstream, Kind: "upstream", ReportingMTA: att.Upstream, Recipients: rejected,
		}
		a.Reports = appendCapped(a.Reports, *report, MaxReportsKept)
	}
	if a.Queued() {
		a.NextAttemptAt = att.NextAttemptAt // checked above: not zero
	} else {
		a.NextAttemptAt = time.Time{}
	}
	if reason != "" {
		a.Reason = reason
	}
	a.settle(now, reason, report)
	return a.Events[before:], nil
}

// actionStatus maps a report action to the status it moves a recipient to.
var actionStatus = map[string]Status{
	"failed":    StatusNotDelivered,
	"delayed":   StatusDelayed,
	"delivered": StatusDelivered,
}

// ApplyReport records a delivery report and moves each reported recipient
// as its action says: failed → not_delivered, delayed → delayed, delivered →
// delivered. Feedback and auto-reply reports change no status. A report
// recipient that is not on the answer applies to the answer's only
// recipient when it has one (bounces often name the final, forwarded
// address), and is otherwise kept but applied to nobody. A change the
// transition table forbids (a delay DSN after a failure, say) is skipped:
// the report is kept, the status stands.
//
// A report whose ID the answer already has is ErrDuplicate and changes
// nothing. It returns the events of the change.
func (a *Answer) ApplyReport(rep Report, now time.Time) ([]Event, error) {
	if rep.ID == "" {
		return nil, fmt.Errorf("%w: report without an id", ErrInvalid)
	}
	for _, r := range a.Reports {
		if r.ID == rep.ID {
			return nil, ErrDuplicate
		}
	}
	before := len(a.Events)
	a.Reports = appendCapped(a.Reports, rep, MaxReportsKept)
	if rep.Kind == ReportKindFeedback || rep.Kind == ReportKindAutoReply {
		return nil, nil
	}
	reason := ""
	for _, rr := range rep.Recipients {
		to, ok := actionStatus[strings.ToLower(rr.Action)]
		if !ok {
			continue
		}
		r := a.recipient(rr.Address)
		if r == nil && len(a.Recipients) == 1 {
			r = &a.Recipients[0]
		}
		if r == nil || !CanTransition(r.Status, to) {
			continue
		}
		r.Status, r.Since = to, now
		r.Code, r.Enhanced, r.Text = rr.ReplyCode, rr.Status, rr.Diagnostic
		if to == StatusNotDelivered {
			r.Reason, reason = rr.Reason, rr.Reason
		}
	}
	if reason != "" {
		a.Reason = reason
	}
	if !a.Queued() {
		a.NextAttemptAt = time.Time{}
	}
	a.settle(now, reason, &rep)
	return a.Events[before:], nil
}

// MarkDelayed moves every recipient still scheduled to delayed: the answer
// has been queued longer than delay_after. It returns the events of the
// change, none if no recipient was scheduled.
func (a *Answer) MarkDelayed(now time.Time) []Event {
	before := len(a.Events)
	for i := range a.Recipients {
		if r := &a.Recipients[i]; r.Status == StatusScheduled {
			r.Status, r.Since = StatusDelayed, now
		}
	}
	a.settle(now, "", nil)
	return a.Events[before:]
}

// Resend queues the not-delivered recipients again (the explicit resend of
// SPEC section 2): they become scheduled, the answer is due at once, its
// queue age starts over and a later failure may reopen the ticket again. An
// answer with no not-delivered recipient is ErrIllegalTransition.
func (a *Answer) Resend(now time.Time) ([]Event, error) {
	before := len(a.Events)
	n := 0
	for i := range a.Recipients {
		if r := &a.Recipients[i]; r.Status == StatusNotDelivered {
			r.Status, r.Since, r.Reason = StatusScheduled, now, ""
			r.Code, r.Enhanced, r.Text, r.SentAt = 0, "", "", time.Time{}
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: resend of an answer with no undelivered recipient", ErrIllegalTransition)
	}
	a.QueuedAt, a.NextAttemptAt, a.Reopened, a.Reason = now, now, false, ""
	a.settle(now, "", nil)
	return a.Events[before:], nil
}

// settle recomputes the answer's status from its recipients and appends the
// event of the change, if any: answer.<status>, followed by ticket.reopen
// when the answer became not delivered, has a ticket, and was not reopened
// for this episode yet.
func (a *Answer) settle(now time.Time, reason string, rep *Report) {
	statuses := make([]Status, len(a.Recipients))
	for i, r := range a.Recipients {
		statuses[i] = r.Status
	}
	next := Worst(statuses...)
	if next == a.Status {
		return
	}
	prev := a.Status
	a.Status, a.StatusSince = next, now
	a.emit(statusEvent[next], prev, now, reason, rep)
	if next == StatusNotDelivered && a.TicketID != "" && !a.Reopened {
		a.Reopened = true
		a.emit(EventTicketReopen, prev, now, reason, rep)
	}
}

func (a *Answer) emit(t EventType, prev Status, now time.Time, reason string, rep *Report) {
	seq := a.Seq() + 1
	a.Events = append(a.Events, Event{
		ID: EventID(a.ID, seq), Type: t, AnswerID: a.ID, Seq: seq, At: now,
		Status: a.Status, PreviousStatus: prev, TicketID: a.TicketID, AnswerRef: a.AnswerRef,
		Reason: reason, Report: rep.Summary(),
	})
}

// SetReferences records the helpdesk references read on acceptance. They
// are copied into the answer.scheduled event emitted by NewAnswer.
func (a *Answer) SetReferences(ticketID, answerRef string) {
	a.TicketID, a.AnswerRef = ticketID, answerRef
	for i := range a.Events {
		a.Events[i].TicketID, a.Events[i].AnswerRef = ticketID, answerRef
	}
}

func appendCapped[T any](s []T, v T, limit int) []T {
	s = append(s, v)
	if len(s) > limit {
		s = append(s[:0:0], s[len(s)-limit:]...)
	}
	return s
}
