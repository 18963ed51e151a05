package outbox

import (
	"context"
	"io"
	"time"
)

// LookupKey names the reference Store.Lookup searches by.
type LookupKey string

// Lookup keys.
const (
	ByAnswerRef  LookupKey = "answer_ref"  // the helpdesk's answer reference
	ByMessageID  LookupKey = "message_id"  // Message-ID, without angle brackets
	ByEnvelopeID LookupKey = "envelope_id" // ENVID / Original-Envelope-Id
)

// Filter selects answers for Store.List. Zero fields match everything.
type Filter struct {
	Status   Status
	TicketID string
	// AcceptedFrom and AcceptedTo bound the acceptance time, [from, to).
	AcceptedFrom, AcceptedTo time.Time
	// Cursor is Page.Next of the previous page; empty for the first page.
	Cursor string
	// Limit caps the page size; engines apply a default of 50 and a
	// maximum of 500.
	Limit int
}

// Page is one page of a list, newest answer first.
type Page struct {
	Answers []*Answer
	// Next is the cursor of the following page; empty on the last page.
	Next string
}

// Lease is an answer handed to one worker for a bounded time.
type Lease struct {
	Answer *Answer
	Owner  string
	// Token identifies this lease; RecordAttempt and Release with a stale
	// token fail with ErrLeaseLost.
	Token string
	Until time.Time
}

// QueueStats describes the delivery queue.
type QueueStats struct {
	// Length counts answers with a pending recipient.
	Length int
	// Oldest is the QueuedAt of the oldest queued answer; zero when the
	// queue is empty.
	Oldest time.Time
}

// EventStats describes the event log.
type EventStats struct {
	// Pending counts answers with at least one unacknowledged event.
	Pending int
	// Oldest is the time of the oldest unacknowledged event; zero when
	// none.
	Oldest time.Time
}

// Unmatched is a bounce that matched no answer, kept so it can be listed
// and counted, never dropped.
type Unmatched struct {
	Report Report `json:"report"`
}

// Store is the durable outbox shared by every relay replica. Every method
// that changes an answer applies one of the state-machine methods of
// *Answer and persists the result, its index updates and the events it
// returned as one atomic write: after an error nothing was written, after a
// nil error all of it was. A method that would make an illegal transition
// returns ErrIllegalTransition and writes nothing; a repeated transition
// writes no second event. Failures to reach the backing store are wrapped in
// ErrUnavailable. Stores take the time from an injected Clock.
type Store interface {
	// Accept stores a new answer (from NewAnswer, references filled in)
	// with its message body, streamed from body without holding it whole
	// in memory, and its answer.scheduled event. When Accept returns nil
	// the answer is durable (the relay may say 250) and due for delivery;
	// on error nothing of it is visible, and any partial body is removed
	// or expires by itself. An existing id is ErrExists. The stored
	// record's Size is the number of body bytes read: the relay streams the
	// message and cannot know it beforehand.
	Accept(ctx context.Context, a *Answer, body io.Reader) error
	// Body streams the stored message of an answer.
	Body(ctx context.Context, id string) (io.ReadCloser, error)

	// Get returns the answer with the given id, ErrNotFound if there never
	// was one and ErrExpired if it was deleted after retention.
	Get(ctx context.Context, id string) (*Answer, error)
	// Lookup returns the most recent answer whose reference under key is
	// value, or ErrNotFound.
	Lookup(ctx context.Context, key LookupKey, value string) (*Answer, error)
	// List returns answers matching f, newest first, a page at a time. A
	// cursor stays valid while answers are added.
	List(ctx context.Context, f Filter) (Page, error)

	// Lease hands up to max answers that are due (NextAttemptAt <= now)
	// and not leased to owner until now+ttl, oldest due first. No two
	// unexpired leases cover one answer; when a lease expires the answer
	// is due again and another worker may lease it.
	Lease(ctx context.Context, owner string, max int, ttl time.Duration) ([]*Lease, error)
	// RecordAttempt applies Answer.ApplyAttempt under the lease and ends
	// the lease; the answer is due again at att.NextAttemptAt if a
	// recipient is still pending, and leaves the queue otherwise. A stale
	// lease is ErrLeaseLost and records nothing.
	RecordAttempt(ctx context.Context, l *Lease, att Attempt) (*Answer, error)
	// Release ends a lease without an attempt; the answer is due at once.
	Release(ctx context.Context, l *Lease) error
	// ExtendLease moves the end of a lease still held to now+ttl and sets
	// l.Until, so a worker whose delivery outlasts the lease keeps the
	// answer to itself. A lease another worker took since is ErrLeaseLost
	// and changes nothing.
	ExtendLease(ctx context.Context, l *Lease, ttl time.Duration) error
	// MarkDelayed applies Answer.MarkDelayed to up to max answers that have
	// a scheduled recipient and were queued before queuedBefore, and
	// returns the events it wrote: one answer.delayed for each answer whose
	// status changed. Each answer is marked once per queue episode.
	MarkDelayed(ctx context.Context, queuedBefore time.Time, max int) ([]Event, error)
	// RecordReport applies Answer.ApplyReport to answer id and keeps raw
	// (at most MaxRawReport bytes) for ReportRaw. The same report id twice
	// is ErrDuplicate and changes nothing.
	RecordReport(ctx context.Context, id string, rep Report, raw []byte) (*Answer, error)
	// ReportRaw returns the raw message of a report of an answer.
	ReportRaw(ctx context.Context, answerID, reportID string) ([]byte, error)
	// Resend applies Answer.Resend: the answer is due again at once.
	Resend(ctx context.Context, id string) (*Answer, error)

	// RecordUnmatched keeps a bounce that matched no answer; the same
	// report id twice is ErrDuplicate.
	RecordUnmatched(ctx context.Context, rep Report, raw []byte) error
	// ListUnmatched lists unmatched bounces, newest first, with a cursor
	// as List has.
	ListUnmatched(ctx context.Context, cursor string, limit int) ([]Unmatched, string, error)
	// CountUnmatched counts the unmatched bounces kept.
	CountUnmatched(ctx context.Context) (int, error)

	// QueueStats returns the queue length and the oldest queued answer.
	QueueStats(ctx context.Context) (QueueStats, error)

	// ClaimEvents hands up to max events to consumer until now+ttl: for
	// each answer with unacknowledged events, only its first
	// unacknowledged one, and only once its retry time (see RetryEvent) has
	// come. So events of one answer go out in sequence order while
	// different answers go out in parallel, and no event is claimed by two
	// consumers at once. A claim that lapses makes the event claimable
	// again.
	ClaimEvents(ctx context.Context, consumer string, max int, ttl time.Duration) ([]*EventClaim, error)
	// AckEvent marks the claimed event handled; the answer's next event,
	// if any, becomes claimable at once. A stale claim is ErrLeaseLost.
	AckEvent(ctx context.Context, c *EventClaim) error
	// RetryEvent ends the claim and makes the same event claimable again
	// at time at, remembering the endpoints in done and counting the
	// attempt (FirstAttemptAt is set on the first retry). A stale claim is
	// ErrLeaseLost.
	RetryEvent(ctx context.Context, c *EventClaim, at time.Time, done []string) error
	// EventStats returns the event backlog.
	EventStats(ctx context.Context) (EventStats, error)

	// AddDeadLetter keeps an event an endpoint did not take.
	AddDeadLetter(ctx context.Context, d DeadLetter) error
	// ListDeadLetters lists dead letters, oldest first, with a cursor.
	ListDeadLetters(ctx context.Context, cursor string, limit int) ([]DeadLetter, string, error)
	// TakeDeadLetter removes a dead letter and returns it, for a replay;
	// ErrNotFound if there is none with that id.
	TakeDeadLetter(ctx context.Context, id string) (DeadLetter, error)
	// SetEndpointDisabled records whether a webhook endpoint is disabled
	// (after a 410), shared by every replica.
	SetEndpointDisabled(ctx context.Context, endpoint string, disabled bool) error
	// EndpointDisabled reports whether a webhook endpoint is disabled.
	EndpointDisabled(ctx context.Context, endpoint string) (bool, error)

	// Expire deletes up to max answers accepted before acceptedBefore that
	// are no longer queued, with their bodies, reports, events and index
	// entries, keeping a tombstone so Get returns ErrExpired. It returns
	// how many it deleted.
	Expire(ctx context.Context, acceptedBefore time.Time, max int) (int, error)

	// Ping checks that the backing store answers.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}
