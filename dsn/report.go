package dsn

// Kinds of report, the value of Report.Kind.
const (
	// KindNone is a message that reports nothing: not a bounce.
	KindNone = ""
	// KindDSN is a delivery status notification, standard (RFC 3464) or not.
	KindDSN = "dsn"
	// KindFeedback is an abuse or feedback-loop report (RFC 5965).
	KindFeedback = "feedback"
	// KindAutoReply is an automatic reply such as a vacation notice (RFC 3834).
	KindAutoReply = "autoreply"
)

// Report is what one message says about the delivery of an earlier one.
type Report struct {
	// Kind is KindDSN, KindFeedback, KindAutoReply or KindNone.
	Kind string `json:"kind"`
	// Recipients lists one record per recipient the message reports on; it is
	// empty when the message is not a report.
	Recipients []Recipient `json:"recipients"`
	// MessageID is the Message-ID of the returned (original) message, without
	// angle brackets.
	MessageID string `json:"message_id"`
	// EnvelopeID is the Original-Envelope-Id of the DSN (RFC 3464 section
	// 2.2.1), the ENVID given at submission (RFC 3461 section 4.4).
	EnvelopeID string `json:"envelope_id"`
	// Tag is the X-Answer-Relay-ID header field of the returned message.
	Tag string `json:"tag"`
	// VERP is the address the report was sent to when it has the form
	// prefix+id@domain (variable envelope return path).
	VERP string `json:"verp"`
	// ReportingMTA is the host that wrote the report.
	ReportingMTA string `json:"reporting_mta"`
	// ReturnedHeaders are the header fields of the returned message, in order.
	ReturnedHeaders []Field `json:"returned_headers"`
}

// Recipient is what a report says about one recipient.
type Recipient struct {
	// Address is the recipient's address (Final-Recipient, or as the
	// bounce names it), without angle brackets.
	Address string `json:"address"`
	// Action is failed, delayed, delivered, relayed or expanded (RFC 3464
	// section 2.3.3); empty for feedback reports and auto-replies.
	Action string `json:"action"`
	// Status is the enhanced status code (RFC 3463), e.g. "5.1.1".
	Status string `json:"status"`
	// ReplyCode is the three-digit SMTP reply code, or "" when none is given.
	ReplyCode string `json:"reply_code"`
	// Diagnostic is the remote server's or the MTA's text about the failure.
	Diagnostic string `json:"diagnostic"`
	// RemoteMTA is the host that gave the diagnostic, when known.
	RemoteMTA string `json:"remote_mta"`
	// Reason is the cause in Sisimai's vocabulary: userunknown, mailboxfull,
	// hostunknown, filtered, rejected, expired, feedback, vacation, ...
	Reason string `json:"reason"`
	// Hard is true when the address can never receive mail: reason
	// userunknown, hostunknown or hasmoved, or notaccept with a 5xx code.
	Hard bool `json:"hard"`
	// FeedbackType is the Feedback-Type of a feedback report (RFC 5965
	// section 3.1), e.g. "abuse".
	FeedbackType string `json:"feedback_type,omitempty"`
}

// Field is one header field of the returned message.
type Field struct {
	// Name is the field name as written.
	Name string `json:"name"`
	// Value is the unfolded field value, with encoded words decoded.
	Value string `json:"value"`
}
