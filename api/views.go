package api

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/answer-relay/answer-relay/dsn"
	"github.com/answer-relay/answer-relay/outbox"
)

// Indicator is the delivery status indicator of an answer, shown to agents
// (GET /api/v1/answers/{id}).
type Indicator struct {
	ID         string          `json:"id"`
	Status     outbox.Status   `json:"status"`
	Label      string          `json:"label"`
	Since      time.Time       `json:"since"`
	TicketID   string          `json:"ticket_id"`
	AnswerRef  string          `json:"answer_ref"`
	Recipients []RecipientView `json:"recipients"`
	Links      Links           `json:"links"`
}

// RecipientView is one recipient's status in the indicator.
type RecipientView struct {
	Address string        `json:"address"`
	Status  outbox.Status `json:"status"`
	Label   string        `json:"label"`
	Since   time.Time     `json:"since"`
}

// Links are the API addresses of an answer's views.
type Links struct {
	Self    string `json:"self"`
	Details string `json:"details"`
	Report  string `json:"report"`
}

// Details is the Mail outbox view of an answer (GET
// /api/v1/answers/{id}/details), for owners and admins.
type Details struct {
	ID            string          `json:"id"`
	Status        outbox.Status   `json:"status"`
	Label         string          `json:"label"`
	Since         time.Time       `json:"since"`
	Reason        string          `json:"reason,omitempty"`
	TicketID      string          `json:"ticket_id"`
	AnswerRef     string          `json:"answer_ref"`
	AcceptedAt    time.Time       `json:"accepted_at"`
	QueuedAt      time.Time       `json:"queued_at"`
	NextAttemptAt *time.Time      `json:"next_attempt_at,omitempty"`
	ExpiresAt     *time.Time      `json:"expires_at,omitempty"`
	Envelope      Envelope        `json:"envelope"`
	Subject       string          `json:"subject,omitempty"`
	Size          int64           `json:"size"`
	Headers       []outbox.Header `json:"headers"`
	Recipients    []RecipientFull `json:"recipients"`
	Attempts      []AttemptView   `json:"attempts"`
	Reports       []ReportParsed  `json:"reports"`
	Events        []outbox.Event  `json:"events"`
	Links         Links           `json:"links"`
}

// Envelope is the SMTP envelope of an answer.
type Envelope struct {
	MailFrom   string   `json:"mail_from"`
	RcptTo     []string `json:"rcpt_to"`
	EnvelopeID string   `json:"envelope_id"`
	MessageID  string   `json:"message_id,omitempty"`
}

// RecipientFull is one recipient with the last reply or report about it.
type RecipientFull struct {
	RecipientView
	ReplyCode    int    `json:"reply_code,omitempty"`
	EnhancedCode string `json:"enhanced_code,omitempty"`
	Text         string `json:"text,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

// AttemptView is one delivery attempt. ReplyCode, EnhancedCode and Text
// are those of its most telling outcome (a permanent failure before a
// temporary one before a success); Outcomes has every recipient's.
type AttemptView struct {
	Number          int           `json:"number"`
	StartedAt       time.Time     `json:"started_at"`
	DurationSeconds float64       `json:"duration_seconds"`
	Upstream        string        `json:"upstream"`
	ReplyCode       int           `json:"reply_code,omitempty"`
	EnhancedCode    string        `json:"enhanced_code,omitempty"`
	Text            string        `json:"text,omitempty"`
	Error           string        `json:"error,omitempty"`
	NextAttemptAt   *time.Time    `json:"next_attempt_at,omitempty"`
	Outcomes        []OutcomeView `json:"outcomes"`
}

// OutcomeView is what the upstream replied for one recipient.
type OutcomeView struct {
	Address      string             `json:"address"`
	Kind         outbox.OutcomeKind `json:"kind"`
	ReplyCode    int                `json:"reply_code,omitempty"`
	EnhancedCode string             `json:"enhanced_code,omitempty"`
	Text         string             `json:"text,omitempty"`
	Reason       string             `json:"reason,omitempty"`
}

// ReportParsed is a delivery report as parsed, without its raw message.
type ReportParsed struct {
	ID           string                `json:"id"`
	ReceivedAt   time.Time             `json:"received_at"`
	Source       outbox.ReportSource   `json:"source"`
	Kind         string                `json:"kind"`
	ReportingMTA string                `json:"reporting_mta,omitempty"`
	Recipients   []ReportRecipientView `json:"recipients"`
	RawSize      int64                 `json:"raw_size"`
}

// ReportRecipientView is one recipient of a report, with the meaning of
// its enhanced status code in words.
type ReportRecipientView struct {
	outbox.ReportRecipient
	StatusMeaning string `json:"status_meaning,omitempty"`
}

// DeliveryReport is a report with its raw message. Raw is the message as
// text when it is valid UTF-8 (RawEncoding "utf-8"), else base64
// (RawEncoding "base64"); both are empty when no raw message was kept, as
// for an upstream's rejection.
type DeliveryReport struct {
	ReportParsed
	Raw         string `json:"raw,omitempty"`
	RawEncoding string `json:"raw_encoding,omitempty"`
	// RawTruncated is true when the store kept only the first
	// outbox.MaxRawReport bytes.
	RawTruncated bool `json:"raw_truncated"`
}

// ReportView is the delivery report of an answer (GET
// /api/v1/answers/{id}/report): the most telling report (the newest with a
// failed recipient, else the newest) explained, and every report newest
// first.
type ReportView struct {
	AnswerID    string           `json:"answer_id"`
	Status      outbox.Status    `json:"status"`
	Label       string           `json:"label"`
	Explanation *Explanation     `json:"explanation"`
	Report      *DeliveryReport  `json:"report"`
	Reports     []DeliveryReport `json:"reports"`
	Links       Links            `json:"links"`
}

// Explanation says in words what happened to a recipient of a report.
type Explanation struct {
	Recipient  string `json:"recipient"`
	Action     string `json:"action"`
	StatusCode string `json:"status_code,omitempty"`
	// Meaning is the meaning of StatusCode (RFC 3463, IANA registry).
	Meaning    string `json:"meaning,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
	Hard       bool   `json:"hard"`
}

// StatusCodeView explains one enhanced status code.
type StatusCodeView struct {
	Code string `json:"code"`
	// Class is "success", "transient" or "permanent" (RFC 3463 section
	// 3.1).
	Class   string `json:"class"`
	Meaning string `json:"meaning"`
	// Reference is the document defining the code, when registered.
	Reference string `json:"reference,omitempty"`
}

// OutboxItem is one answer of the outbox list.
type OutboxItem struct {
	ID         string          `json:"id"`
	Status     outbox.Status   `json:"status"`
	Label      string          `json:"label"`
	Since      time.Time       `json:"since"`
	AcceptedAt time.Time       `json:"accepted_at"`
	TicketID   string          `json:"ticket_id"`
	AnswerRef  string          `json:"answer_ref"`
	Subject    string          `json:"subject,omitempty"`
	Sender     string          `json:"sender"`
	Recipients []RecipientView `json:"recipients"`
	Attempts   int             `json:"attempts"`
	Links      Links           `json:"links"`
}

// List is one page of a list. NextCursor is empty on the last page; Next
// is the URL of the following page (also sent as a Link header).
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
	Next       string `json:"next,omitempty"`
}

// ReplayResult answers a replayed dead letter.
type ReplayResult struct {
	ID       string `json:"id"`
	Replayed bool   `json:"replayed"`
}

func (s *Server) links(id string) Links {
	self := s.cfg.BaseURL + BasePath + "/answers/" + pathEscape(id)
	return Links{Self: self, Details: self + "/details", Report: self + "/report"}
}

func recipientViews(a *outbox.Answer) []RecipientView {
	out := make([]RecipientView, len(a.Recipients))
	for i, r := range a.Recipients {
		out[i] = RecipientView{Address: r.Address, Status: r.Status, Label: r.Status.Label(), Since: r.Since}
	}
	return out
}

func (s *Server) indicator(a *outbox.Answer) Indicator {
	return Indicator{
		ID: a.ID, Status: a.Status, Label: a.Status.Label(), Since: a.StatusSince,
		TicketID: a.TicketID, AnswerRef: a.AnswerRef, Recipients: recipientViews(a), Links: s.links(a.ID),
	}
}

func (s *Server) outboxItem(a *outbox.Answer) OutboxItem {
	return OutboxItem{
		ID: a.ID, Status: a.Status, Label: a.Status.Label(), Since: a.StatusSince, AcceptedAt: a.AcceptedAt,
		TicketID: a.TicketID, AnswerRef: a.AnswerRef, Subject: a.Subject, Sender: a.Sender,
		Recipients: recipientViews(a), Attempts: len(a.Attempts), Links: s.links(a.ID),
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) details(a *outbox.Answer) Details {
	d := Details{
		ID: a.ID, Status: a.Status, Label: a.Status.Label(), Since: a.StatusSince, Reason: a.Reason,
		TicketID: a.TicketID, AnswerRef: a.AnswerRef, AcceptedAt: a.AcceptedAt, QueuedAt: a.QueuedAt,
		NextAttemptAt: timePtr(a.NextAttemptAt),
		Envelope:      Envelope{MailFrom: a.Sender, EnvelopeID: a.EnvelopeID, MessageID: a.MessageID},
		Subject:       a.Subject, Size: a.Size, Headers: safeHeaders(a.Headers),
		Recipients: []RecipientFull{}, Attempts: []AttemptView{}, Reports: []ReportParsed{},
		Events: a.Events, Links: s.links(a.ID),
	}
	if d.Events == nil {
		d.Events = []outbox.Event{}
	}
	if s.retention > 0 {
		d.ExpiresAt = timePtr(a.AcceptedAt.Add(s.retention))
	}
	for _, r := range a.Recipients {
		d.Envelope.RcptTo = append(d.Envelope.RcptTo, r.Address)
		d.Recipients = append(d.Recipients, RecipientFull{
			RecipientView: RecipientView{Address: r.Address, Status: r.Status, Label: r.Status.Label(), Since: r.Since},
			ReplyCode:     r.Code, EnhancedCode: r.Enhanced, Text: r.Text, Reason: r.Reason,
		})
	}
	for _, at := range a.Attempts {
		v := AttemptView{
			Number: at.Number, StartedAt: at.StartedAt, DurationSeconds: at.Duration.Seconds(),
			Upstream: at.Upstream, Error: at.Error, NextAttemptAt: timePtr(at.NextAttemptAt),
			Outcomes: make([]OutcomeView, len(at.Outcomes)),
		}
		rank := -1
		for i, o := range at.Outcomes {
			v.Outcomes[i] = OutcomeView{Address: o.Address, Kind: o.Kind, ReplyCode: o.Code, EnhancedCode: o.Enhanced, Text: o.Text, Reason: o.Reason}
			if r := outcomeRank[o.Kind]; r > rank {
				rank = r
				v.ReplyCode, v.EnhancedCode, v.Text = o.Code, o.Enhanced, o.Text
			}
		}
		d.Attempts = append(d.Attempts, v)
	}
	for i := len(a.Reports) - 1; i >= 0; i-- {
		d.Reports = append(d.Reports, parsedReport(a.Reports[i]))
	}
	return d
}

// outcomeRank orders outcomes by how much they tell about an attempt.
var outcomeRank = map[outbox.OutcomeKind]int{outbox.OutcomeSent: 0, outbox.OutcomeTemporary: 1, outbox.OutcomePermanent: 2}

func parsedReport(r outbox.Report) ReportParsed {
	p := ReportParsed{
		ID: r.ID, ReceivedAt: r.ReceivedAt, Source: r.Source, Kind: r.Kind, ReportingMTA: r.ReportingMTA,
		Recipients: make([]ReportRecipientView, len(r.Recipients)), RawSize: r.RawSize,
	}
	for i, rr := range r.Recipients {
		p.Recipients[i] = ReportRecipientView{ReportRecipient: rr}
		if m, ok := dsn.StatusText(rr.Status); ok {
			p.Recipients[i].StatusMeaning = m
		}
	}
	return p
}

// explain picks the most telling recipient of a report: the first failed
// one, else the first.
func explain(r outbox.Report) *Explanation {
	if len(r.Recipients) == 0 {
		return nil
	}
	rr := r.Recipients[0]
	for _, c := range r.Recipients {
		if strings.EqualFold(c.Action, "failed") {
			rr = c
			break
		}
	}
	e := &Explanation{Recipient: rr.Address, Action: rr.Action, StatusCode: rr.Status, Reason: rr.Reason, Diagnostic: rr.Diagnostic, Hard: rr.Hard}
	if m, ok := dsn.StatusText(rr.Status); ok {
		e.Meaning = m
	}
	return e
}

// mainReport returns the index in reports of the newest report with a
// failed recipient, else of the newest report; -1 if there is none.
func mainReport(reports []outbox.Report) int {
	for i := len(reports) - 1; i >= 0; i-- {
		for _, rr := range reports[i].Recipients {
			if strings.EqualFold(rr.Action, "failed") {
				return i
			}
		}
	}
	return len(reports) - 1
}

func withRaw(p ReportParsed, raw []byte) DeliveryReport {
	d := DeliveryReport{ReportParsed: p}
	if len(raw) == 0 {
		return d
	}
	if utf8.Valid(raw) {
		d.Raw, d.RawEncoding = string(raw), "utf-8"
	} else {
		d.Raw, d.RawEncoding = base64.StdEncoding.EncodeToString(raw), "base64"
	}
	d.RawTruncated = len(raw) >= outbox.MaxRawReport
	return d
}

// Header names never shown, matched case-insensitively as substrings: the
// relay removes credentials on acceptance, and this is the second line of
// defence (SPEC section 9).
var secretHeaderParts = []string{"auth", "password", "passwd", "secret", "token", "cookie", "api-key", "apikey", "credential"}

// secretValue finds AUTH data that MTAs write into trace fields:
// "(Authenticated sender: joe)" (Postfix), "smtp.auth=joe" (RFC 8601),
// "AUTH PLAIN <base64>" and "auth=joe".
var secretValue = regexp.MustCompile(`(?i)(authenticated sender:\s*|smtp\.auth=|\bauth[= ](?:plain|login|cram-md5|xoauth2)?\s*|\bauthenticated-as[= ]\s*)[^\s;)]+`)

// safeHeaders drops header fields that may carry credentials and redacts
// AUTH data in the values of trace fields (Received, X-*).
func safeHeaders(hs []outbox.Header) []outbox.Header {
	out := make([]outbox.Header, 0, len(hs))
next:
	for _, h := range hs {
		name := strings.ToLower(h.Name)
		for _, p := range secretHeaderParts {
			if strings.Contains(name, p) {
				continue next
			}
		}
		if name == "received" || strings.HasPrefix(name, "x-") {
			h.Value = secretValue.ReplaceAllString(h.Value, "${1}<redacted>")
		}
		out = append(out, h)
	}
	return out
}

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
