package outbox

import (
	"crypto/rand"
	"encoding/json"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Limits on what one record keeps, so a record stays small however often an
// answer is retried or bounced. The oldest entries are dropped first.
const (
	MaxAttemptsKept = 50
	MaxReportsKept  = 20
	// MaxRawReport is the largest raw bounce a store keeps; intake keeps the
	// first MaxRawReport bytes of a larger one.
	MaxRawReport = 1 << 20
)

// Answer is the durable record of one outbound answer.
type Answer struct {
	// ID is a ULID given on acceptance: sortable by acceptance time. It is
	// also the X-Answer-Relay-ID tag and the VERP token.
	ID         string    `json:"id"`
	AcceptedAt time.Time `json:"accepted_at"`
	// QueuedAt is when the answer last entered the queue: AcceptedAt, or
	// the time of the last Resend. Queue age and delay count from it.
	QueuedAt time.Time `json:"queued_at"`
	// EnvelopeID is sent upstream as ENVID and comes back in DSNs as
	// Original-Envelope-Id. It defaults to ID.
	EnvelopeID string      `json:"envelope_id"`
	Sender     string      `json:"sender"`
	Recipients []Recipient `json:"recipients"`
	// TicketID and AnswerRef are the helpdesk's references, read from its
	// headers or Subject.
	TicketID  string `json:"ticket_id,omitempty"`
	AnswerRef string `json:"answer_ref,omitempty"`
	// MessageID is the Message-ID header without angle brackets.
	MessageID string `json:"message_id,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Submitter is the AUTH identity, or the client address when the client
	// relayed from an allowed network.
	Submitter string `json:"submitter,omitempty"`
	// Size is the stored message size in bytes, with the added header.
	Size int64 `json:"size"`
	// Headers is the message's header section for the details view, with
	// credentials removed by the relay.
	Headers []Header `json:"headers,omitempty"`

	Status      Status    `json:"status"`
	StatusSince time.Time `json:"status_since"`
	// Reason is the last failure reason, a Sisimai reason name or "expired".
	Reason string `json:"reason,omitempty"`
	// NextAttemptAt is when a worker may next try the pending recipients;
	// zero when none is pending.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	Attempts      []Attempt `json:"attempts,omitempty"`
	// Reports are the delivery reports, without their raw message (see
	// Store.ReportRaw).
	Reports []Report `json:"reports,omitempty"`
	// Events are every event of this answer, in sequence order.
	Events []Event `json:"events,omitempty"`
	// Reopened is set once ticket.reopen was emitted for the current
	// not_delivered episode; Resend clears it.
	Reopened bool `json:"reopened,omitempty"`
	// Version counts writes; engines use it as a compare-and-set guard.
	Version int64 `json:"version"`
}

// Header is one header field as received.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Recipient is one envelope recipient and its own status.
type Recipient struct {
	Address string    `json:"address"`
	Status  Status    `json:"status"`
	Since   time.Time `json:"since"`
	// Code, Enhanced and Text are the last reply or report about this
	// recipient (e.g. 550, "5.1.1", "user unknown").
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"`
	Text     string `json:"text,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// SentAt is when the upstream accepted the message for this recipient;
	// zero until then, and again after a Resend. A recipient the upstream
	// took is never delivered again, even when a delay DSN later makes its
	// status "delayed".
	SentAt time.Time `json:"sent_at,omitzero"`
}

// Pending reports whether the recipient still waits for the upstream to
// accept it: scheduled or delayed, and not yet sent. A recipient delayed by
// a DSN after it was sent is not pending.
func (r *Recipient) Pending() bool { return r.Status.Pending() && r.SentAt.IsZero() }

// OutcomeKind is what the upstream did with one recipient in one attempt.
type OutcomeKind string

// The outcomes of one delivery attempt for one recipient.
const (
	OutcomeSent      OutcomeKind = "sent"      // 250 after DATA
	OutcomeTemporary OutcomeKind = "temporary" // 4xx or network error: retry
	OutcomePermanent OutcomeKind = "permanent" // 5xx, or retries expired
)

// RecipientOutcome is the result of one attempt for one recipient.
type RecipientOutcome struct {
	Address  string      `json:"address"`
	Kind     OutcomeKind `json:"kind"`
	Code     int         `json:"code,omitempty"`
	Enhanced string      `json:"enhanced,omitempty"`
	Text     string      `json:"text,omitempty"`
	// Reason is set for permanent outcomes: "rejected" for a 5xx reply,
	// "expired" when the maximum lifetime ran out, or a finer reason.
	Reason string `json:"reason,omitempty"`
}

// Attempt is one delivery attempt of an answer to an upstream server.
type Attempt struct {
	Number    int                `json:"number"`
	StartedAt time.Time          `json:"started_at"`
	Duration  time.Duration      `json:"duration_ns"`
	Upstream  string             `json:"upstream"`
	Outcomes  []RecipientOutcome `json:"outcomes"`
	// Error is the connection-level error, if the attempt failed before
	// any recipient got a reply.
	Error string `json:"error,omitempty"`
	// NextAttemptAt is when to try the recipients that failed temporarily.
	// It must be set when any outcome is temporary.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
}

// ReportSource says how a delivery report reached the relay.
type ReportSource string

// Report sources.
const (
	SourceUpstream ReportSource = "upstream" // the upstream's reply to the relay
	SourceSMTP     ReportSource = "smtp"     // the bounce listener
	SourceAPI      ReportSource = "api"      // POST /api/v1/reports
	SourceCLI      ReportSource = "cli"      // answer-relay report ingest
)

// Report is a delivery report about an answer: a returned bounce or DSN, an
// auto-reply or feedback report, or a permanent upstream rejection.
type Report struct {
	// ID identifies the report; the same bounce ingested twice has the same
	// ID (intake derives it from the content), so recording it twice is
	// detected.
	ID         string       `json:"id"`
	ReceivedAt time.Time    `json:"received_at"`
	Source     ReportSource `json:"source"`
	// Kind is "dsn", "feedback" (RFC 5965 ARF), "autoreply" (RFC 3834) or
	// "upstream".
	Kind         string            `json:"kind"`
	ReportingMTA string            `json:"reporting_mta,omitempty"`
	Recipients   []ReportRecipient `json:"recipients"`
	// RawSize is the size of the raw message kept (see Store.ReportRaw).
	RawSize int64 `json:"raw_size,omitempty"`
}

// Report kinds that change no status.
const (
	ReportKindFeedback  = "feedback"
	ReportKindAutoReply = "autoreply"
)

// ReportRecipient is one recipient of a delivery report (SPEC section 4).
type ReportRecipient struct {
	Address    string `json:"address"`
	Action     string `json:"action"` // failed, delayed, delivered, relayed, expanded
	Status     string `json:"status,omitempty"`
	ReplyCode  int    `json:"reply_code,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
	RemoteMTA  string `json:"remote_mta,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Hard       bool   `json:"hard"`
}

// Summary is the one-recipient digest of a report carried by events.
func (r *Report) Summary() *ReportSummary {
	if r == nil || len(r.Recipients) == 0 {
		return nil
	}
	rr := r.Recipients[0]
	for _, c := range r.Recipients {
		if c.Action == "failed" {
			rr = c
			break
		}
	}
	return &ReportSummary{ReportID: r.ID, Recipient: rr.Address, StatusCode: rr.Status, Reason: rr.Reason, Diagnostic: rr.Diagnostic}
}

// NewID returns a new answer id: a ULID, sortable by time.
func NewID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), rand.Reader).String()
}

// Clock tells the time. Stores and workers take one so tests can move time.
type Clock func() time.Time

// Clone returns a deep copy of a, for engines that must keep the stored
// record unchanged until a write succeeds.
func (a *Answer) Clone() *Answer {
	b, err := json.Marshal(a)
	if err != nil {
		panic("outbox: clone: " + err.Error()) // every field marshals
	}
	var c Answer
	if err := json.Unmarshal(b, &c); err != nil {
		panic("outbox: clone: " + err.Error())
	}
	return &c
}

// Seq is the sequence number of the answer's last event.
func (a *Answer) Seq() int64 { return int64(len(a.Events)) }

// Queued reports whether any recipient still waits for the upstream.
func (a *Answer) Queued() bool {
	for i := range a.Recipients {
		if a.Recipients[i].Pending() {
			return true
		}
	}
	return false
}

// Awaiting reports whether a recipient is still scheduled, that is the
// answer is one the delay sweeper may mark delayed.
func (a *Answer) Awaiting() bool {
	for _, r := range a.Recipients {
		if r.Status == StatusScheduled {
			return true
		}
	}
	return false
}

// PendingRecipients returns the addresses a worker should deliver to.
func (a *Answer) PendingRecipients() []string {
	var out []string
	for i := range a.Recipients {
		if r := &a.Recipients[i]; r.Pending() {
			out = append(out, r.Address)
		}
	}
	return out
}

// recipient returns the recipient with the given address (case-insensitive).
func (a *Answer) recipient(addr string) *Recipient {
	for i := range a.Recipients {
		if strings.EqualFold(a.Recipients[i].Address, addr) {
			return &a.Recipients[i]
		}
	}
	return nil
}
