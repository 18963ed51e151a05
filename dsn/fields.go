package dsn

import "strings"

// rcpt is a recipient record being built.
type rcpt struct {
	address   string
	original  string
	action    string
	status    string
	diag      string
	diagType  string
	remoteMTA string
	reason    string // set by a format rule that knows better than the text
	final     bool   // reason is a service's own verdict: no probing
	reporter  string // the reporting MTA
	vague     bool   // diag is the whole text, which says nothing about why
	command   string // the SMTP command the error answered, when known
	context   string // what the human-readable text says about the recipient
}

// statusReport is the content of a message/delivery-status part.
type statusReport struct {
	reportingMTA string
	envid        string
	rcpts        []*rcpt
}

// parseStatus reads the per-message and per-recipient fields of a
// delivery-status body (RFC 3464 sections 2.2 and 2.3). It is lenient: a
// Final-Recipient or Original-Recipient that repeats starts a new recipient,
// blank lines and unknown fields are ignored.
func parseStatus(s string) statusReport {
	var ds statusReport
	var cur *rcpt
	ls := lines(s)
	for i := 0; i < len(ls); i++ {
		l := strings.TrimRight(ls[i], " \t\r")
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		// Join continuation lines.
		for i+1 < len(ls) && len(ls[i+1]) > 0 && (ls[i+1][0] == ' ' || ls[i+1][0] == '\t') {
			i++
			l += " " + strings.TrimSpace(ls[i])
		}
		name, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		val = strings.TrimSpace(val)
		switch name {
		case "reporting-mta":
			ds.reportingMTA = typed(val)
		case "original-envelope-id":
			ds.envid = val
		case "final-recipient", "x-actual-recipient":
			a := typedAddr(val)
			if name == "x-actual-recipient" {
				if cur != nil && cur.address == "" {
					cur.address = a
				}
				continue
			}
			if cur == nil || cur.address != "" {
				cur = &rcpt{}
				ds.rcpts = append(ds.rcpts, cur)
			}
			cur.address = a
		case "original-recipient":
			a := typedAddr(val)
			if cur == nil || cur.original != "" {
				cur = &rcpt{}
				ds.rcpts = append(ds.rcpts, cur)
			}
			cur.original = a
		default:
			if cur == nil {
				// Some reporters write a recipient's fields before its
				// Final-Recipient.
				switch name {
				case "action", "status", "diagnostic-code", "remote-mta":
					cur = &rcpt{}
					ds.rcpts = append(ds.rcpts, cur)
				default:
					continue
				}
			}
			switch name {
			case "action":
				cur.action = strings.ToLower(strings.Fields(val + " x")[0])
			case "status":
				cur.status = findStatus(val)
				if cur.status == "" {
					cur.status = val
				}
			case "diagnostic-code":
				t, text, ok := strings.Cut(val, ";")
				if ok && !strings.ContainsAny(strings.TrimSpace(t), " ") {
					cur.diagType = strings.ToUpper(strings.TrimSpace(t))
					cur.diag = strings.TrimSpace(text)
				} else {
					cur.diag = val
				}
			case "remote-mta":
				cur.remoteMTA = typed(val)
			case "x-powermta-bouncecategory":
				if r := powerMTACategories[strings.ToLower(val)]; r != "" && cur.reason == "" {
					cur.reason = r
				}
			}
		}
	}
	// A record without Final-Recipient uses Original-Recipient.
	out := ds.rcpts[:0]
	for _, r := range ds.rcpts {
		if r.address == "" || !plainAddr(r.address) && plainAddr(r.original) {
			r.address = r.original
		}
		if r.address != "" {
			out = append(out, r)
		}
	}
	ds.rcpts = out
	return ds
}

// typed strips the type of a typed value: "dns; mx.example.com" →
// "mx.example.com".
func typed(v string) string {
	if _, after, ok := strings.Cut(v, ";"); ok {
		v = after
	}
	return strings.TrimSpace(v)
}

// typedAddr returns the address of a typed address field.
func typedAddr(v string) string {
	v = typed(v)
	if a := firstAddr(v); a != "" {
		return a
	}
	// Not an Internet address (X.400 and the like): its first word, as
	// written.
	if f := strings.Fields(v); len(f) > 0 {
		return strings.Trim(f[0], "<>")
	}
	return ""
}

// plainAddr reports whether a is a plain Internet address, local@domain:
// not a source route ("@relay:local@domain"), not a bare domain.
func plainAddr(a string) bool {
	at := strings.LastIndexByte(a, '@')
	return at > 0 && at < len(a)-1 && a[0] != '@' && !strings.ContainsAny(a, ":,;<> ")
}

// powerMTACategories are PowerMTA's bounce categories
// (X-PowerMTA-BounceCategory), by the reason each names.
var powerMTACategories = map[string]string{
	"bad-domain": ReasonHostUnknown, "bad-mailbox": ReasonUserUnknown, "inactive-mailbox": ReasonSuspend,
	"invalid-sender": ReasonRejected, "message-expired": ReasonExpired, "no-answer-from-host": ReasonNetworkError,
	"policy-related": ReasonPolicyViolation, "quota-issues": ReasonMailboxFull, "relaying-issues": ReasonNoRelaying,
	"routing-errors": ReasonSystemError, "spam-related": ReasonSpamDetected, "virus-related": ReasonVirusDetected,
	"protocol-errors": ReasonSyntaxError, "content-related": ReasonContentError,
}
