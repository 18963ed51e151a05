package relay

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/outbox"
)

// classify is the one place that decides what an upstream error means for
// a recipient (RFC 5321 section 4.2.1): a 5xx reply is permanent, a 4xx
// reply is temporary, and anything else, a network error included, is
// temporary. A permanent outcome carries a reason of the Sisimai taxonomy,
// from the enhanced status code (RFC 3463) when it says more than
// "rejected".
func classify(err error) outbox.RecipientOutcome {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return outbox.RecipientOutcome{Kind: outbox.OutcomeTemporary, Text: err.Error()}
	}
	o := outbox.RecipientOutcome{Code: se.Code, Enhanced: enhanced(se.EnhancedCode), Text: se.Message}
	switch se.Code / 100 {
	case 5:
		o.Kind = outbox.OutcomePermanent
		o.Reason = reasonOf(o.Enhanced)
	default:
		o.Kind = outbox.OutcomeTemporary
	}
	return o
}

// enhanced formats an enhanced status code, "" when there is none.
func enhanced(c smtp.EnhancedCode) string {
	if c == smtp.EnhancedCodeNotSet || c == smtp.NoEnhancedCode {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// reasons maps permanent enhanced status codes (RFC 3463 section 3) to the
// Sisimai reason they mean; others are "rejected".
var reasons = map[string]string{
	"5.1.1":  "userunknown",  // bad destination mailbox address
	"5.1.6":  "userunknown",  // destination mailbox has moved
	"5.1.10": "userunknown",  // RFC 7505 null MX for the recipient
	"5.1.2":  "hostunknown",  // bad destination system address
	"5.2.1":  "suspend",      // mailbox disabled
	"5.2.2":  "mailboxfull",  // mailbox full
	"5.2.3":  "mesgtoobig",   // message length exceeds administrative limit
	"5.3.4":  "mesgtoobig",   // message too big for system
	"5.7.1":  "rejected",     // delivery not authorized, message refused
	"5.7.26": "authfailure",  // RFC 7372: multiple authentication checks failed
	"5.6.7":  "contenterror", // RFC 6531: non-ASCII addresses not permitted
}

func reasonOf(code string) string {
	if r, ok := reasons[code]; ok {
		return r
	}
	return "rejected"
}

// isReply reports whether err is an SMTP reply after which the connection
// is still usable (421 means the server is closing it).
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code != 421
}
