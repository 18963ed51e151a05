package outbox

import (
	"context"
	"io"
	"time"
)

// Observer is told the events of every change a Store wrote, after the
// write succeeded, in sequence order per answer.
type Observer func(ctx context.Context, events []Event)

// Observed returns a Store that passes every call to s and calls observe
// with the events each successful write added: the one place that sees
// every state change, whichever part of the relay made it (logs and
// metrics hang off it).
func Observed(s Store, observe Observer) Store { return &observed{Store: s, observe: observe} }

type observed struct {
	Store
	observe Observer
}

func (o *observed) Accept(ctx context.Context, a *Answer, body io.Reader) error {
	if err := o.Store.Accept(ctx, a, body); err != nil {
		return err
	}
	o.observe(ctx, a.Events)
	return nil
}

func (o *observed) RecordAttempt(ctx context.Context, l *Lease, att Attempt) (*Answer, error) {
	seq := l.Answer.Seq() // before the call: an engine may update l.Answer
	after, err := o.Store.RecordAttempt(ctx, l, att)
	if err == nil {
		o.observe(ctx, eventsAfter(after, seq))
	}
	return after, err
}

func (o *observed) RecordReport(ctx context.Context, id string, rep Report, raw []byte) (*Answer, error) {
	after, err := o.Store.RecordReport(ctx, id, rep, raw)
	if err == nil {
		// ApplyReport tags every event it emits with the report's summary,
		// and a report id is recorded once per answer.
		var added []Event
		for _, e := range after.Events {
			if e.Report != nil && e.Report.ReportID == rep.ID {
				added = append(added, e)
			}
		}
		o.observe(ctx, added)
	}
	return after, err
}

func (o *observed) Resend(ctx context.Context, id string) (*Answer, error) {
	after, err := o.Store.Resend(ctx, id)
	if err == nil && len(after.Events) > 0 {
		// A resend always changes the answer's status (no recipient is left
		// not delivered), and emits exactly that one event.
		o.observe(ctx, after.Events[len(after.Events)-1:])
	}
	return after, err
}

func (o *observed) MarkDelayed(ctx context.Context, queuedBefore time.Time, max int) ([]Event, error) {
	events, err := o.Store.MarkDelayed(ctx, queuedBefore, max)
	if len(events) > 0 {
		o.observe(ctx, events) // written, even if a later answer failed
	}
	return events, err
}

// eventsAfter returns the events of a with a sequence number above seq.
func eventsAfter(a *Answer, seq int64) []Event {
	if a == nil || seq >= int64(len(a.Events)) || seq < 0 {
		return nil
	}
	return a.Events[seq:]
}
