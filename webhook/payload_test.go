package webhook

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func outboxType(s string) outbox.EventType { return outbox.EventType(s) }

func TestPayload(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 4, 10, 0, time.FixedZone("CET", 3600))
	rep := &outbox.ReportSummary{ReportID: "r1", Recipient: "c@example.org", StatusCode: "5.1.1", Reason: "userunknown", Diagnostic: "550 5.1.1 user unknown"}
	base := outbox.Event{ID: "01A-3", AnswerID: "01A", Seq: 3, At: at, Status: outbox.StatusNotDelivered, PreviousStatus: outbox.StatusSent, TicketID: "T-1", AnswerRef: "A-7"}
	cases := []struct {
		name    string
		ev      func() outbox.Event
		apiBase string
		want    string
	}{
		{
			name: "answer.scheduled has every required field, empty references too",
			ev: func() outbox.Event {
				return outbox.Event{ID: "01A-1", Type: outbox.EventScheduled, AnswerID: "01A", Seq: 1, At: at, Status: outbox.StatusScheduled}
			},
			want: `{"type":"answer.scheduled","timestamp":"2026-03-02T08:04:10Z","data":{"version":1,"event_id":"01A-1","answer_id":"01A","ticket_id":"","answer_ref":"","seq":1,"status":"scheduled","status_label":"Answer scheduled","previous_status":""}}`,
		},
		{
			name: "answer.not_delivered carries the report and its link",
			ev: func() outbox.Event {
				e := base
				e.Type, e.Reason, e.Report = outbox.EventNotDelivered, "userunknown", rep
				return e
			},
			apiBase: "https://relay.example.com/",
			want:    `{"type":"answer.not_delivered","timestamp":"2026-03-02T08:04:10Z","data":{"version":1,"event_id":"01A-3","answer_id":"01A","ticket_id":"T-1","answer_ref":"A-7","seq":3,"status":"not_delivered","status_label":"Answer not delivered","previous_status":"sent","reason":"userunknown","report":{"report_id":"r1","recipient":"c@example.org","status_code":"5.1.1","reason":"userunknown","diagnostic":"550 5.1.1 user unknown"},"report_url":"https://relay.example.com/api/v1/answers/01A/report"}}`,
		},
		{
			name: "ticket.reopen carries the note word for word and a link without a report",
			ev: func() outbox.Event {
				e := base
				e.ID, e.Seq, e.Type, e.Reason = "01A-4", 4, outbox.EventTicketReopen, "expired"
				return e
			},
			want: `{"type":"ticket.reopen","timestamp":"2026-03-02T08:04:10Z","data":{"version":1,"event_id":"01A-4","answer_id":"01A","ticket_id":"T-1","answer_ref":"A-7","seq":4,"status":"not_delivered","status_label":"Answer not delivered","previous_status":"sent","reason":"expired","report_url":"/api/v1/answers/01A/report","note":"System reopened ticket because an answer was not delivered"}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewPayload(tc.ev(), tc.apiBase).marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("payload\n got %s\nwant %s", b, tc.want)
			}
			var back Payload
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Data.EventID != tc.ev().ID {
				t.Errorf("event_id %q, want %q", back.Data.EventID, tc.ev().ID)
			}
		})
	}
	if n := NewPayload(outbox.Event{Type: outbox.EventTicketReopen}, "").Data.Note; n != outbox.ReopenNote {
		t.Errorf("note %q, want outbox.ReopenNote", n)
	}
}
