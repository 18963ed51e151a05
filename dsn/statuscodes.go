package dsn

import (
	"strconv"
	"strings"
)

// StatusCode is one entry of the enhanced status code table: a subject.detail
// pair valid in any class ("X.1.1"), its meaning and the document defining it.
type StatusCode struct {
	// Code is the class-independent form, "X.<subject>.<detail>".
	Code string `json:"code"`
	// Meaning is the one-line title of the code in the IANA registry.
	Meaning string `json:"meaning"`
	// Reference is the RFC that defines the code.
	Reference string `json:"reference"`
}

// StatusCodes is the table of enhanced status codes of RFC 3463 section 3
// and the IANA "SMTP Enhanced Status Codes" registry (RFC 5248), in order.
// Each applies in every class (2 success, 4 persistent transient failure,
// 5 permanent failure) where the registry allows it.
var StatusCodes = []StatusCode{
	{"X.0.0", "Other undefined status", "RFC 3463"},
	{"X.1.0", "Other address status", "RFC 3463"},
	{"X.1.1", "Bad destination mailbox address", "RFC 3463"},
	{"X.1.2", "Bad destination system address", "RFC 3463"},
	{"X.1.3", "Bad destination mailbox address syntax", "RFC 3463"},
	{"X.1.4", "Destination mailbox address ambiguous", "RFC 3463"},
	{"X.1.5", "Destination address valid", "RFC 3463"},
	{"X.1.6", "Destination mailbox has moved, no forwarding address", "RFC 3463"},
	{"X.1.7", "Bad sender's mailbox address syntax", "RFC 3463"},
	{"X.1.8", "Bad sender's system address", "RFC 3463"},
	{"X.1.9", "Message relayed to non-compliant mailer", "RFC 3886"},
	{"X.1.10", "Recipient address has null MX", "RFC 7505"},
	{"X.2.0", "Other or undefined mailbox status", "RFC 3463"},
	{"X.2.1", "Mailbox disabled, not accepting messages", "RFC 3463"},
	{"X.2.2", "Mailbox full", "RFC 3463"},
	{"X.2.3", "Message length exceeds administrative limit", "RFC 3463"},
	{"X.2.4", "Mailing list expansion problem", "RFC 3463"},
	{"X.3.0", "Other or undefined mail system status", "RFC 3463"},
	{"X.3.1", "Mail system full", "RFC 3463"},
	{"X.3.2", "System not accepting network messages", "RFC 3463"},
	{"X.3.3", "System not capable of selected features", "RFC 3463"},
	{"X.3.4", "Message too big for system", "RFC 3463"},
	{"X.3.5", "System incorrectly configured", "RFC 3463"},
	{"X.3.6", "Requested priority was changed", "RFC 6710"},
	{"X.4.0", "Other or undefined network or routing status", "RFC 3463"},
	{"X.4.1", "No answer from host", "RFC 3463"},
	{"X.4.2", "Bad connection", "RFC 3463"},
	{"X.4.3", "Directory server failure", "RFC 3463"},
	{"X.4.4", "Unable to route", "RFC 3463"},
	{"X.4.5", "Mail system congestion", "RFC 3463"},
	{"X.4.6", "Routing loop detected", "RFC 3463"},
	{"X.4.7", "Delivery time expired", "RFC 3463"},
	{"X.4.8", "Recipient address has null MX", "RFC 7505"},
	{"X.5.0", "Other or undefined protocol status", "RFC 3463"},
	{"X.5.1", "Invalid command", "RFC 3463"},
	{"X.5.2", "Syntax error", "RFC 3463"},
	{"X.5.3", "Too many recipients", "RFC 3463"},
	{"X.5.4", "Invalid command arguments", "RFC 3463"},
	{"X.5.5", "Wrong protocol version", "RFC 3463"},
	{"X.5.6", "Authentication exchange line is too long", "RFC 4954"},
	{"X.6.0", "Other or undefined media error", "RFC 3463"},
	{"X.6.1", "Media not supported", "RFC 3463"},
	{"X.6.2", "Conversion required and prohibited", "RFC 3463"},
	{"X.6.3", "Conversion required but not supported", "RFC 3463"},
	{"X.6.4", "Conversion with loss performed", "RFC 3463"},
	{"X.6.5", "Conversion failed", "RFC 3463"},
	{"X.6.6", "Message content not available", "RFC 4468"},
	{"X.6.7", "Non-ASCII addresses not permitted for that sender/recipient", "RFC 6531"},
	{"X.6.8", "UTF-8 string reply is required, but not permitted by the SMTP client", "RFC 6531"},
	{"X.6.9", "UTF-8 header message cannot be transferred to one or more recipients", "RFC 6531"},
	{"X.6.10", "UTF-8 string reply is required, but not permitted by the SMTP client", "RFC 6531"},
	{"X.7.0", "Other or undefined security status", "RFC 3463"},
	{"X.7.1", "Delivery not authorized, message refused", "RFC 3463"},
	{"X.7.2", "Mailing list expansion prohibited", "RFC 3463"},
	{"X.7.3", "Security conversion required but not possible", "RFC 3463"},
	{"X.7.4", "Security features not supported", "RFC 3463"},
	{"X.7.5", "Cryptographic failure", "RFC 3463"},
	{"X.7.6", "Cryptographic algorithm not supported", "RFC 3463"},
	{"X.7.7", "Message integrity failure", "RFC 3463"},
	{"X.7.8", "Authentication credentials invalid", "RFC 4954"},
	{"X.7.9", "Authentication mechanism is too weak", "RFC 4954"},
	{"X.7.10", "Encryption needed", "RFC 5248"},
	{"X.7.11", "Encryption required for requested authentication mechanism", "RFC 4954"},
	{"X.7.12", "A password transition is needed", "RFC 4954"},
	{"X.7.13", "User account disabled", "RFC 5248"},
	{"X.7.14", "Trust relationship required", "RFC 5248"},
	{"X.7.15", "Priority level is too low", "RFC 6710"},
	{"X.7.16", "Message is too big for the specified priority", "RFC 6710"},
	{"X.7.17", "Mailbox owner has changed", "RFC 7293"},
	{"X.7.18", "Domain owner has changed", "RFC 7293"},
	{"X.7.19", "RRVS test cannot be completed", "RFC 7293"},
	{"X.7.20", "No passing DKIM signature found", "RFC 7372"},
	{"X.7.21", "No acceptable DKIM signature found", "RFC 7372"},
	{"X.7.22", "No valid author-matched DKIM signature found", "RFC 7372"},
	{"X.7.23", "SPF validation failed", "RFC 7372"},
	{"X.7.24", "SPF validation error", "RFC 7372"},
	{"X.7.25", "Reverse DNS validation failed", "RFC 7372"},
	{"X.7.26", "Multiple authentication checks failed", "RFC 7372"},
	{"X.7.27", "Sender address has null MX", "RFC 7505"},
	{"X.7.28", "Mail flood detected", "RFC 8689"},
	{"X.7.29", "ARC validation failure", "RFC 8617"},
	{"X.7.30", "REQUIRETLS support required", "RFC 8689"},
}

// subjectText is the meaning of each subject sub-code (RFC 3463 section 3),
// used when a detail is not in the table.
var subjectText = [...]string{
	0: "Other or undefined status",
	1: "Addressing status",
	2: "Mailbox status",
	3: "Mail system status",
	4: "Network and routing status",
	5: "Mail delivery protocol status",
	6: "Message content or media status",
	7: "Security or policy status",
}

// classText is the meaning of each class (RFC 3463 section 3.1).
var classText = map[byte]string{
	'2': "Success",
	'4': "Persistent transient failure",
	'5': "Permanent failure",
}

var statusIndex = func() map[string]string {
	m := make(map[string]string, len(StatusCodes))
	for _, c := range StatusCodes {
		m[c.Code[2:]] = c.Meaning
	}
	return m
}()

// StatusText returns a one-line meaning of an enhanced status code
// "class.subject.detail" (RFC 3463 section 2), such as "5.1.1" → "Bad
// destination mailbox address". A detail missing from the registry falls back
// to the class and subject, e.g. "4.2.99" → "Persistent transient failure:
// mailbox status". ok is false only when code is not a well-formed enhanced
// status code (class 2, 4 or 5, subject and detail of 1-3 digits).
func StatusText(code string) (meaning string, ok bool) {
	class, subject, detail, ok := splitStatus(code)
	if !ok {
		return "", false
	}
	if m, found := statusIndex[strconv.Itoa(subject)+"."+strconv.Itoa(detail)]; found {
		return m, true
	}
	if subject < len(subjectText) {
		return classText[class] + ": " + strings.ToLower(subjectText[subject][:1]) + subjectText[subject][1:], true
	}
	return classText[class] + ": undefined subject", true
}

// splitStatus splits a well-formed enhanced status code into its parts.
func splitStatus(code string) (class byte, subject, detail int, ok bool) {
	parts := strings.Split(strings.TrimSpace(code), ".")
	if len(parts) != 3 || len(parts[0]) != 1 {
		return 0, 0, 0, false
	}
	class = parts[0][0]
	if class != '2' && class != '4' && class != '5' {
		return 0, 0, 0, false
	}
	var nums [2]int
	for i, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return 0, 0, 0, false
		}
		n := 0
		for j := 0; j < len(p); j++ {
			if p[j] < '0' || p[j] > '9' {
				return 0, 0, 0, false
			}
			n = n*10 + int(p[j]-'0')
		}
		nums[i] = n
	}
	return class, nums[0], nums[1], true
}

// validStatus reports whether code is a well-formed enhanced status code.
func validStatus(code string) bool {
	_, _, _, ok := splitStatus(code)
	return ok
}
