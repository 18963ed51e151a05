package outbox

import (
	"fmt"
	"time"
)

// EventType names an event, as sent in the webhook body's "type".
type EventType string

// The event types of SPEC section 5.
const (
	EventScheduled    EventType = "answer.scheduled"
	EventSent         EventType = "answer.sent"
	EventDelayed      EventType = "answer.delayed"
	EventNotDelivered EventType = "answer.not_delivered"
	EventDelivered    EventType = "answer.delivered"
	// EventTicketReopen is emitted once per not_delivered episode of an
	// answer that has a ticket reference, right after answer.not_delivered.
	EventTicketReopen EventType = "ticket.reopen"
)

// EventTypes lists every event type.
var EventTypes = []EventType{EventScheduled, EventSent, EventDelayed, EventNotDelivered, EventDelivered, EventTicketReopen}

// ReopenNote is the system note carried by ticket.reopen, word for word.
const ReopenNote = "System reopened ticket because an answer was not delivered"

// statusEvent maps an answer status to the event announcing it.
var statusEvent = map[Status]EventType{
	StatusScheduled:    EventScheduled,
	StatusSent:         EventSent,
	StatusDelayed:      EventDelayed,
	StatusNotDelivered: EventNotDelivered,
	StatusDelivered:    EventDelivered,
}

// Event is one entry of an answer's event sequence.
type Event struct {
	// ID is "<answer id>-<seq>": stable, so a webhook delivery retried any
	// number of times carries the same webhook-id.
	ID             string         `json:"id"`
	Type           EventType      `json:"type"`
	AnswerID       string         `json:"answer_id"`
	Seq            int64          `json:"seq"`
	At             time.Time      `json:"at"`
	Status         Status         `json:"status"`
	PreviousStatus Status         `json:"previous_status,omitempty"`
	TicketID       string         `json:"ticket_id,omitempty"`
	AnswerRef      string         `json:"answer_ref,omitempty"`
	Reason         string         `json:"reason,omitempty"`
	Report         *ReportSummary `json:"report,omitempty"`
}

// ReportSummary is the digest of a delivery report carried by events.
type ReportSummary struct {
	ReportID   string `json:"report_id"`
	Recipient  string `json:"recipient"`
	StatusCode string `json:"status_code,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
}

// EventID returns the id of an answer's event with sequence number seq.
func EventID(answerID string, seq int64) string { return fmt.Sprintf("%s-%d", answerID, seq) }

// EventClaim is an event handed to one consumer for a bounded time by
// Store.ClaimEvents, with its delivery state.
type EventClaim struct {
	Event Event `json:"event"`
	// Attempts counts earlier deliveries of this event that were retried.
	Attempts int `json:"attempts"`
	// FirstAttemptAt is when the first delivery was tried; zero on the
	// first claim.
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	// Done lists the endpoints that already have this event, so a retry
	// posts only to the others.
	Done []string `json:"done,omitempty"`
	// Token identifies this claim; Ack and Retry with a stale token fail
	// with ErrLeaseLost.
	Token string `json:"token"`
	// Until is when the claim lapses and the event may be claimed again.
	Until time.Time `json:"until"`
}

// DeadLetter is an event an endpoint did not take before the retry limit, or
// refused for good.
type DeadLetter struct {
	ID       string    `json:"id"` // "<event id>/<endpoint>"
	Event    Event     `json:"event"`
	Endpoint string    `json:"endpoint"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
}

// DeadLetterID returns the id of the dead letter of an event for an endpoint.
func DeadLetterID(eventID, endpoint string) string { return eventID + "/" + endpoint }
