package webhook

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// PayloadVersion is the version of Data, sent as data.version. Fields are
// only ever added within a version; a removal or a change of meaning makes
// a new version. docs/webhooks.md documents every version.
const PayloadVersion = 1

// Payload is the JSON body of every webhook post (Standard Webhooks
// "payload structure"): the event type, when the event happened, and its
// data.
type Payload struct {
	Type outbox.EventType `json:"type"`
	// Timestamp is when the status changed, RFC 3339 in UTC. It is not
	// the webhook-timestamp header, which is when this post was signed.
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is the data of every event type, version 1. The same struct serves
// all types: answer.* leave Note empty, ticket.reopen sets it.
type Data struct {
	// Version is PayloadVersion.
	Version int `json:"version"`
	// EventID is the webhook-id header: "<answer id>-<seq>", the same on
	// every retry, for deduplication by the receiver.
	EventID  string `json:"event_id"`
	AnswerID string `json:"answer_id"`
	// TicketID and AnswerRef are the helpdesk's references; empty when the
	// answer carried none.
	TicketID  string `json:"ticket_id"`
	AnswerRef string `json:"answer_ref"`
	// Seq is the per-answer sequence number, 1 for answer.scheduled. A
	// receiver that sees a lower Seq than it has already applied for an
	// answer may ignore the event (after a dead-letter replay, say).
	Seq    int64         `json:"seq"`
	Status outbox.Status `json:"status"`
	// StatusLabel is the indicator text of Status ("Answer sent").
	StatusLabel    string        `json:"status_label"`
	PreviousStatus outbox.Status `json:"previous_status"`
	// Reason is the failure reason (a Sisimai reason or "expired"), for
	// answer.not_delivered and ticket.reopen.
	Reason string `json:"reason,omitempty"`
	// Report is the digest of the delivery report behind the change.
	Report *outbox.ReportSummary `json:"report,omitempty"`
	// ReportURL is the API link of the answer's delivery report, on every
	// event that has a report and on ticket.reopen.
	ReportURL string `json:"report_url,omitempty"`
	// Note is outbox.ReopenNote, word for word, on ticket.reopen only.
	Note string `json:"note,omitempty"`
}

// NewPayload returns the payload of an event. apiBase is the public base of
// the HTTP API for the report link (empty for a link relative to the API's
// host).
func NewPayload(ev outbox.Event, apiBase string) Payload {
	d := Data{
		Version:        PayloadVersion,
		EventID:        ev.ID,
		AnswerID:       ev.AnswerID,
		TicketID:       ev.TicketID,
		AnswerRef:      ev.AnswerRef,
		Seq:            ev.Seq,
		Status:         ev.Status,
		StatusLabel:    ev.Status.Label(),
		PreviousStatus: ev.PreviousStatus,
		Reason:         ev.Reason,
		Report:         ev.Report,
	}
	if ev.Report != nil || ev.Type == outbox.EventTicketReopen {
		d.ReportURL = ReportURL(apiBase, ev.AnswerID)
	}
	if ev.Type == outbox.EventTicketReopen {
		d.Note = outbox.ReopenNote
	}
	return Payload{Type: ev.Type, Timestamp: ev.At.UTC(), Data: d}
}

// ReportURL is the API link of an answer's delivery report.
func ReportURL(apiBase, answerID string) string {
	return strings.TrimSuffix(apiBase, "/") + "/api/v1/answers/" + url.PathEscape(answerID) + "/report"
}

// marshal encodes the payload once per event: every endpoint and every
// retry gets the same bytes.
func (p Payload) marshal() ([]byte, error) { return json.Marshal(p) }
