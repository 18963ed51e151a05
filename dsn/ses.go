package dsn

import (
	"encoding/json"
	"strings"
)

// sesMessage is the part of an Amazon SES notification (delivered by SNS
// as e-mail) that says what happened to whom.
// https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
type sesMessage struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           struct {
		BounceType        string `json:"bounceType"`
		BounceSubType     string `json:"bounceSubType"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
		ReportingMTA string `json:"reportingMTA"`
	} `json:"bounce"`
	Complaint struct {
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
		ComplaintFeedbackType string `json:"complaintFeedbackType"`
	} `json:"complaint"`
	Delivery struct {
		Recipients   []string `json:"recipients"`
		SMTPResponse string   `json:"smtpResponse"`
		ReportingMTA string   `json:"reportingMTA"`
	} `json:"delivery"`
}

// sesReport reads an Amazon SES notification in text and returns its kind
// (KindDSN or KindFeedback), the recipients and the reporting MTA; ok is
// false when text holds no such notification.
func sesReport(text string) (kind string, rcpts []*rcpt, fb []Recipient, mta string, ok bool) {
	i := strings.Index(text, `{"notificationType"`)
	if i < 0 {
		i = strings.Index(text, `{"eventType"`)
	}
	if i < 0 {
		return "", nil, nil, "", false
	}
	// SNS breaks long lines of the e-mail body with "!" and a line
	// starting with a space.
	body := strings.ReplaceAll(text[i:], "!\n ", "")
	var m sesMessage
	if err := json.NewDecoder(strings.NewReader(body)).Decode(&m); err != nil {
		return "", nil, nil, "", false
	}
	typ := m.NotificationType
	if typ == "" {
		typ = m.EventType
	}
	switch typ {
	case "Bounce":
		for _, b := range m.Bounce.BouncedRecipients {
			a := firstAddr(b.EmailAddress)
			if a == "" {
				continue
			}
			r := &rcpt{address: a, action: strings.ToLower(b.Action), status: b.Status}
			r.diagType, r.diag = "SMTP", b.DiagnosticCode
			if t, d, ok := strings.Cut(b.DiagnosticCode, ";"); ok && !strings.ContainsAny(strings.TrimSpace(t), " ") {
				r.diagType, r.diag = strings.ToUpper(strings.TrimSpace(t)), strings.TrimSpace(d)
			}
			switch m.Bounce.BounceSubType {
			case "Suppressed", "OnAccountSuppressionList":
				r.reason = ReasonSuppressed
			case "MailboxFull":
				r.reason = ReasonMailboxFull
			case "MessageTooLarge":
				r.reason = ReasonMesgTooBig
			}
			rcpts = append(rcpts, r)
		}
		return KindDSN, rcpts, nil, typed(m.Bounce.ReportingMTA), len(rcpts) > 0
	case "Complaint":
		ft := strings.ToLower(m.Complaint.ComplaintFeedbackType)
		if ft == "" {
			ft = "abuse"
		}
		for _, c := range m.Complaint.ComplainedRecipients {
			if a := firstAddr(c.EmailAddress); a != "" {
				fb = append(fb, Recipient{Address: a, Reason: ReasonFeedback, FeedbackType: ft})
			}
		}
		return KindFeedback, nil, fb, "", len(fb) > 0
	case "Delivery":
		resp := m.Delivery.SMTPResponse
		for _, a := range m.Delivery.Recipients {
			if a = firstAddr(a); a != "" {
				rcpts = append(rcpts, &rcpt{address: a, action: "delivered", status: findStatus(resp),
					diagType: "SMTP", diag: resp})
			}
		}
		return KindDSN, rcpts, nil, typed(m.Delivery.ReportingMTA), len(rcpts) > 0
	}
	return "", nil, nil, "", false
}
