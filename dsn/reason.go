package dsn

import "strings"

// Reasons, Sisimai's names for why a message was not delivered.
const (
	ReasonAuthFailure     = "authfailure"
	ReasonBadReputation   = "badreputation"
	ReasonBlocked         = "blocked"
	ReasonContentError    = "contenterror"
	ReasonDelivered       = "delivered"
	ReasonExceedLimit     = "exceedlimit"
	ReasonExpired         = "expired"
	ReasonFailedSTARTTLS  = "failedstarttls"
	ReasonFeedback        = "feedback"
	ReasonFiltered        = "filtered"
	ReasonHasMoved        = "hasmoved"
	ReasonHostUnknown     = "hostunknown"
	ReasonMailboxFull     = "mailboxfull"
	ReasonMailerError     = "mailererror"
	ReasonMesgTooBig      = "mesgtoobig"
	ReasonNetworkError    = "networkerror"
	ReasonNoRelaying      = "norelaying"
	ReasonNotAccept       = "notaccept"
	ReasonNotCompliantRFC = "notcompliantrfc"
	ReasonOnHold          = "onhold"
	ReasonPolicyViolation = "policyviolation"
	ReasonRejected        = "rejected"
	ReasonRequirePTR      = "requireptr"
	ReasonSecurityError   = "securityerror"
	ReasonSpamDetected    = "spamdetected"
	ReasonSpeeding        = "speeding"
	ReasonSuppressed      = "suppressed"
	ReasonSuspend         = "suspend"
	ReasonSyntaxError     = "syntaxerror"
	ReasonSystemError     = "systemerror"
	ReasonSystemFull      = "systemfull"
	ReasonTooManyConn     = "toomanyconn"
	ReasonUndefined       = "undefined"
	ReasonUserUnknown     = "userunknown"
	ReasonVacation        = "vacation"
	ReasonVirusDetected   = "virusdetected"
)

// statusReason maps an enhanced status code to the reason it states by
// itself, after the meanings of RFC 3463 section 3 and the IANA registry.
// Codes whose meaning is too wide to name a reason (X.0.0, 4.3.0, 4.7.0 ...)
// are left out.
var statusReason = map[string]string{
	"2.1.5": ReasonDelivered,
	"4.1.6": ReasonHasMoved, "4.1.7": ReasonRejected, "4.1.8": ReasonRejected, "4.1.9": ReasonSystemError,
	"4.2.1": ReasonBlocked, "4.2.2": ReasonMailboxFull, "4.2.3": ReasonExceedLimit, "4.2.4": ReasonFiltered,
	"4.3.1": ReasonSystemFull, "4.3.2": ReasonNotAccept, "4.3.3": ReasonSystemError, "4.3.5": ReasonSystemError,
	"4.4.1": ReasonExpired, "4.4.2": ReasonNetworkError, "4.4.3": ReasonSystemError, "4.4.4": ReasonNetworkError,
	"4.4.5": ReasonSystemFull, "4.4.6": ReasonNetworkError, "4.4.7": ReasonExpired, "4.4.8": ReasonNetworkError,
	"4.5.3": ReasonSystemError, "4.5.5": ReasonSystemError,
	"4.6.0": ReasonContentError, "4.6.2": ReasonContentError, "4.6.5": ReasonContentError,
	"4.7.1": ReasonBlocked, "4.7.2": ReasonBlocked, "4.7.5": ReasonSecurityError, "4.7.6": ReasonSecurityError,
	"4.7.7": ReasonSecurityError, "4.7.12": ReasonSecurityError, "4.7.15": ReasonSecurityError,
	"4.7.16": ReasonMesgTooBig, "4.7.24": ReasonAuthFailure, "4.7.25": ReasonRequirePTR, "4.7.26": ReasonAuthFailure,
	"5.1.0": ReasonUserUnknown, "5.1.1": ReasonUserUnknown, "5.1.2": ReasonHostUnknown, "5.1.3": ReasonUserUnknown,
	"5.1.4": ReasonFiltered, "5.1.6": ReasonHasMoved, "5.1.7": ReasonRejected, "5.1.8": ReasonRejected,
	"5.1.9": ReasonSystemError, "5.1.10": ReasonNotAccept,
	"5.2.0": ReasonFiltered, "5.2.1": ReasonFiltered, "5.2.2": ReasonMailboxFull, "5.2.3": ReasonExceedLimit,
	"5.2.4": ReasonFiltered,
	"5.3.0": ReasonSystemError, "5.3.1": ReasonSystemFull, "5.3.2": ReasonNotAccept, "5.3.3": ReasonSystemError,
	"5.3.4": ReasonMesgTooBig, "5.3.5": ReasonSystemError,
	"5.4.0": ReasonNetworkError, "5.4.3": ReasonSystemError, "5.4.4": ReasonHostUnknown,
	"5.5.2": ReasonSyntaxError, "5.5.3": ReasonTooManyConn, "5.5.4": ReasonSystemError, "5.5.5": ReasonSystemError,
	"5.5.6": ReasonSyntaxError,
	"5.6.0": ReasonContentError, "5.6.1": ReasonContentError, "5.6.2": ReasonContentError,
	"5.6.3": ReasonContentError, "5.6.5": ReasonContentError, "5.6.6": ReasonContentError,
	"5.6.7": ReasonContentError, "5.6.8": ReasonContentError, "5.6.9": ReasonContentError,
	"5.7.0": ReasonSecurityError, "5.7.1": ReasonSecurityError, "5.7.2": ReasonSecurityError,
	"5.7.3": ReasonSecurityError, "5.7.4": ReasonSecurityError, "5.7.5": ReasonSecurityError,
	"5.7.6": ReasonSecurityError, "5.7.7": ReasonSecurityError, "5.7.8": ReasonSecurityError,
	"5.7.9": ReasonSecurityError, "5.7.10": ReasonSecurityError, "5.7.11": ReasonSecurityError,
	"5.7.13": ReasonSuspend, "5.7.14": ReasonSecurityError, "5.7.15": ReasonSecurityError,
	"5.7.16": ReasonMesgTooBig, "5.7.17": ReasonHasMoved, "5.7.18": ReasonHasMoved, "5.7.19": ReasonSecurityError,
	"5.7.20": ReasonAuthFailure, "5.7.21": ReasonAuthFailure, "5.7.22": ReasonAuthFailure,
	"5.7.23": ReasonAuthFailure, "5.7.24": ReasonAuthFailure, "5.7.25": ReasonRequirePTR,
	"5.7.26": ReasonAuthFailure, "5.7.27": ReasonNotAccept, "5.7.28": ReasonSpamDetected,
	"5.7.29": ReasonAuthFailure, "5.7.30": ReasonFailedSTARTTLS,
}

// statusName returns the reason an enhanced status code states by itself.
func statusName(code string) string { return statusReason[code] }

// tentative are reasons a status code names too loosely to be final: the
// diagnostic text is asked first.
var tentative = map[string]bool{
	ReasonUndefined: true, ReasonOnHold: true, ReasonSystemError: true, ReasonSecurityError: true,
	ReasonExpired: true, ReasonNetworkError: true, ReasonHostUnknown: true, ReasonUserUnknown: true,
}

// reasonStatus is the enhanced status code given to a recipient whose bounce
// carries none, by reason.
var reasonStatus = map[string]string{
	ReasonUserUnknown: "5.1.1", ReasonHostUnknown: "5.1.2", ReasonHasMoved: "5.1.6",
	ReasonRejected: "5.1.8", ReasonSuspend: "5.2.1", ReasonMailboxFull: "5.2.2",
	ReasonExceedLimit: "5.2.3", ReasonSystemFull: "5.3.1", ReasonNotAccept: "5.3.2",
	ReasonMesgTooBig: "5.3.4", ReasonSystemError: "5.3.5", ReasonNetworkError: "5.4.6",
	ReasonExpired: "5.4.7", ReasonSyntaxError: "5.5.2", ReasonContentError: "5.6.0",
	ReasonSecurityError: "5.7.0", ReasonBlocked: "5.7.1", ReasonNoRelaying: "5.7.1",
	ReasonAuthFailure: "5.7.26", ReasonRequirePTR: "5.7.25", ReasonDelivered: "2.1.5",
}

// firstOrder is the order of the first pass: reasons a status code or a
// diagnostic names with little doubt.
var firstOrder = []string{
	ReasonMailboxFull, ReasonMesgTooBig, ReasonExceedLimit, ReasonSuspend, ReasonHasMoved,
	ReasonNoRelaying, ReasonAuthFailure, ReasonUserUnknown, ReasonFiltered, ReasonRequirePTR,
	ReasonNotCompliantRFC, ReasonBadReputation, ReasonContentError, ReasonRejected, ReasonHostUnknown,
	ReasonSpamDetected, ReasonSpeeding, ReasonTooManyConn, ReasonBlocked,
}

// secondOrder is the order of the second pass: diagnostic texts that only
// hint at a reason.
var secondOrder = []string{
	ReasonMailboxFull, ReasonAuthFailure, ReasonBadReputation, ReasonSpeeding, ReasonSpamDetected,
	ReasonVirusDetected, ReasonPolicyViolation, ReasonNoRelaying, ReasonSystemError,
	ReasonNetworkError, ReasonSuspend, ReasonContentError, ReasonSystemFull, ReasonNotAccept,
	ReasonExpired, ReasonFailedSTARTTLS, ReasonSecurityError, ReasonSuppressed, ReasonMailerError,
}

// classify decides the reason of one recipient from its status code,
// action, reply code, diagnostic and the SMTP command the error answered,
// the way Sisimai's taxonomy does: a reason a format rule set stands unless
// it is a vague one; then the reasons of firstOrder are probed in turn
// (status code and phrases); then the phrases of secondOrder, the status
// code, its class and the action decide.
func classify(r *rcpt, status, reply string, m *match) string {
	if r.final || r.reason != "" && !tentative[r.reason] {
		return r.reason
	}
	if strings.HasPrefix(status, "2.") {
		return ReasonDelivered
	}
	byStatus := statusName(status)
	cmd := r.command
	if r.diagType == "SMTP" || r.diagType == "" {
		for _, reason := range firstOrder {
			if probe(reason, r.reason, byStatus, cmd, reply, status, m) {
				return reason
			}
		}
	}
	if r.reason != "" && r.reason != ReasonUndefined && r.reason != ReasonOnHold {
		return r.reason
	}
	reason := byStatus
	if tentative[reason] || reason == "" || r.diagType != "SMTP" {
		found := ""
		for _, o := range secondOrder {
			if m.has(o) {
				found = o
				break
			}
		}
		switch {
		case found != "":
			reason = found
		case reason != "":
		case strings.HasPrefix(status, "5.6") || strings.HasPrefix(status, "4.6"):
			reason = ReasonContentError
		case strings.HasPrefix(status, "5.7") || strings.HasPrefix(status, "4.7"):
			reason = ReasonSecurityError
		case strings.HasPrefix(r.diagType, "X-UNIX"):
			reason = ReasonMailerError
		case syntaxReply(reply):
			reason = ReasonSyntaxError
		case r.action == "delayed" || r.action == "expired":
			reason = ReasonExpired
		case cmd == "HELO" || cmd == "EHLO" || cmd == "CONN":
			reason = ReasonBlocked
		}
	}
	if reason == "" || reason == ReasonUndefined {
		switch {
		case r.action == "delayed":
			return ReasonExpired
		case m.has(ReasonVacation):
			return ReasonVacation
		case m.d != "" && !r.vague:
			return ReasonOnHold
		}
		return ReasonUndefined
	}
	return reason
}

// syntaxReply reports whether an SMTP reply code says a command was not
// understood (RFC 5321 section 4.2.2: 500-504 and their transient twins).
func syntaxReply(reply string) bool {
	return len(reply) == 3 && (reply > "400" && reply < "408" || reply > "500" && reply < "508")
}

// beforeData are the SMTP commands after which a server has not seen the
// message yet, so it cannot have filtered it.
var beforeData = map[string]bool{"HELO": true, "EHLO": true, "MAIL": true, "RCPT": true, "CONN": true, "STARTTLS": true}

// probe reports whether reason applies, given the reason a format rule
// set, the reason the status code names, the SMTP command, the reply code, the status and the lower-case
// diagnostic.
func probe(reason, set, byStatus, cmd, reply, status string, m *match) bool {
	if set == reason {
		return true
	}
	switch reason {
	case ReasonUserUnknown:
		if byStatus == ReasonUserUnknown {
			for _, o := range []string{ReasonNoRelaying, ReasonBlocked, ReasonMailboxFull, ReasonHasMoved, ReasonRejected, ReasonNotAccept} {
				if m.has(o) {
					return false
				}
			}
			return true
		}
		if !m.has(ReasonUserUnknown) {
			return false
		}
		// A text about the recipient or the mailbox answers RCPT even
		// when the bounce does not name the command.
		return cmd == "RCPT"
	case ReasonFiltered:
		if byStatus == ReasonFiltered {
			return m.has(ReasonUserUnknown) || m.has(ReasonFiltered)
		}
		if beforeData[cmd] {
			return false
		}
		return m.has(ReasonFiltered) || m.has(ReasonUserUnknown)
	case ReasonMesgTooBig:
		if byStatus == ReasonMesgTooBig {
			return true
		}
		if byStatus == ReasonExceedLimit || status == "5.2.3" {
			return false
		}
		return m.has(reason)
	case ReasonSuspend:
		return reply == "525" || m.has(reason)
	case ReasonNoRelaying:
		if cmd == "CONN" || cmd == "EHLO" || cmd == "HELO" {
			return false
		}
		return m.has(reason)
	case ReasonHostUnknown:
		if byStatus == ReasonHostUnknown {
			return !m.has(ReasonNetworkError)
		}
		return m.has(reason)
	case ReasonRejected:
		if byStatus == ReasonRejected {
			return true
		}
		switch {
		case cmd == "MAIL":
		case cmd == "DATA" && byStatus != ReasonUserUnknown:
		case byStatus == "" || byStatus == ReasonUndefined || byStatus == ReasonOnHold ||
			byStatus == ReasonSecurityError || byStatus == ReasonSystemError:
		default:
			return false
		}
		return m.has(ReasonRejected)
	case ReasonSpamDetected:
		if status == "" {
			return false
		}
		if byStatus == ReasonSpamDetected {
			return true
		}
		if beforeData[cmd] {
			return false
		}
		return m.has(reason)
	case ReasonContentError:
		if probe(ReasonSpamDetected, set, byStatus, cmd, reply, status, m) {
			return false
		}
	case ReasonNotCompliantRFC, ReasonBadReputation, ReasonSpeeding, ReasonHasMoved:
		// No status code names these.
		return m.has(reason)
	}
	if byStatus == reason {
		return true
	}
	return m.has(reason)
}

// commandOf finds the SMTP command an error answered in the text of a
// bounce: the last one the text names.
func commandOf(text string) string {
	if text == "" {
		return ""
	}
	l := asciiLower(text)
	m := newMatch(l)
	best, at := "", -1
	for i, c := range commandPhrases {
		if !m.found(compiledCommands[i]) {
			continue
		}
		if i := strings.LastIndex(l, c.phrase); i > at {
			best, at = c.cmd, i
		}
	}
	return best
}

// commandPhrases are the wordings by which bounces name the SMTP command
// an error answered.
var commandPhrases = []struct{ phrase, cmd string }{
	{"rcpt to", "RCPT"}, {"rcpt command", "RCPT"}, {"after rcpt", "RCPT"}, {">>> rcpt", "RCPT"},
	{"mail from", "MAIL"}, {"mail command", "MAIL"}, {"after mail", "MAIL"}, {">>> mail", "MAIL"},
	{"end of data", "DATA"}, {"after data", "DATA"}, {"data command", "DATA"}, {">>> data", "DATA"},
	{"smtp:rcpt", "RCPT"}, {"rcpt_to", "RCPT"}, {"in reply to rcpt", "RCPT"},
	{"ehlo", "EHLO"}, {"helo", "HELO"}, {"starttls", "STARTTLS"},
	// qmail names the step instead of the command.
	{"does not like recipient", "RCPT"}, {"does not like sender", "MAIL"},
	{"but sender was rejected", "MAIL"}, {"but my name was rejected", "HELO"},
	{"didn't like the end of data", "DATA"}, {"after end of data", "DATA"},
	// Postfix: the server refused the session at its greeting.
	{"refused to talk to me", "CONN"},
	// Exchange Online's summary of a refused RCPT.
	{"returned unknown recipient or mailbox unavailable", "RCPT"},
}

// hard reports whether the reason means the address can never receive
// mail.
func hard(reason, status, reply string) bool {
	switch reason {
	case ReasonUserUnknown, ReasonHostUnknown, ReasonHasMoved:
		return true
	case ReasonNotAccept:
		return strings.HasPrefix(status, "5") || strings.HasPrefix(reply, "5")
	}
	return false
}

// finish completes a recipient record: status and reply code from the
// diagnostic where the fields lack them, the reason and the hard flag.
func finish(r *rcpt, temporary bool) Recipient {
	diag := clip(joinReply(squeeze(r.diag)))
	r.context = clip(r.context)
	r.diag = diag
	reply := findReplyCode(diag)
	status := r.status
	if !validStatus(status) {
		status = ""
	}
	if s := findStatus(diag); s != "" {
		if rs := replyStatus(diag); rs != "" && rs != s {
			s = rs
		}
		status = preferStatus(status, s, reply)
	}
	m := newMatch(asciiLower(diag))
	if r.reason == "" {
		r.reason = m.vendor()
	}
	if cmd, reason, ok := gmailState(diag); ok {
		// Gmail ends the reply it relays with the step of its session
		// that failed ("(state 18)"); the step names the reason unless
		// the reply's own status code is specific.
		if r.command == "" {
			r.command = cmd
		}
		if s := findStatus(diag); r.reason == "" && (s == "" || strings.Contains(s, ".0")) {
			r.reason = reason
		}
	}
	action := r.action
	if action == "" {
		switch {
		case strings.HasPrefix(status, "2"):
			action = "delivered"
		case strings.HasPrefix(status, "4") || status == "" && strings.HasPrefix(reply, "4") ||
			status == "" && reply == "" && temporary:
			action = "delayed"
		default:
			action = "failed"
		}
	}
	r.action = action
	if r.command == "" {
		r.command = commandOf(diag)
	}
	if r.command == "" {
		r.command = commandOf(r.context)
	}
	hosts := []string{strings.ToLower(r.remoteMTA), strings.ToLower(r.reporter)}
	if at := strings.LastIndexByte(r.address, '@'); at >= 0 {
		hosts = append(hosts, strings.ToLower(r.address[at+1:]))
	}
	if sr := serviceReason(hosts, reply, status, r.command, diag, m); sr != "" &&
		(r.reason == "" || tentative[r.reason]) {
		r.reason, r.final = sr, true
	}
	reason := classify(r, status, reply, m)
	if status == "" {
		class := "5"
		if strings.HasPrefix(reply, "4") || temporaryDiag(m.d) {
			class = "4"
		}
		if code, ok := reasonStatus[reason]; ok {
			status = class + code[1:]
		} else {
			status = class + ".0.0"
		}
	}
	if reply != "" && (reply[0] != status[0]) && status[0] != '2' {
		// A reply code of another class belongs to another line of text.
		if findStatus(diag) == "" {
			reply = ""
		}
	}
	return Recipient{
		Address:    r.address,
		Action:     action,
		Status:     status,
		ReplyCode:  reply,
		Diagnostic: diag,
		RemoteMTA:  r.remoteMTA,
		Reason:     reason,
		Hard:       hard(reason, status, reply),
	}
}

// temporaryDiag reports whether a lower-case diagnostic says the last attempt failed
// for a passing reason, so that a code made up for it is of class 4: the
// recipient's delivery is retried or was given up only because retrying
// took too long (Exim's "retry timeout exceeded").
func temporaryDiag(l string) bool {
	for _, p := range []string{"will be retried", "will retry", "still trying", "will continue to try",
		"retry timeout exceeded", "have been failing for a long time", "this is a temporary error"} {
		if strings.Contains(l, p) && !strings.Contains(l, "delivery "+p) {
			// GMX words a permanent give-up "delivery retry timeout
			// exceeded".
			return true
		}
	}
	return false
}

// isTemporary reports whether the lower-case text of a bounce says the
// failure is temporary and delivery is still being tried.
func isTemporary(l []byte) bool { return temporarySet.find(l) >= 0 }

// temporaryPhrases are the wordings of a bounce that is a delay warning.
var temporaryPhrases = []string{"will be retried", "will retry", "still trying", "not yet been delivered",
	"delivery is delayed", "delayed", "this is a temporary error", "warning: message", "will continue to try",
	"deferred"}

// preferStatus chooses between the status code of a Status field and the
// one in the diagnostic text (RFC 3463 codes both). The one whose class
// agrees with the SMTP reply code wins; otherwise the field wins unless it
// is vaguer than the text's: X.0.0, X.Y.0, 4.4.7 (expired, said of any
// retried failure), 4.7.0, 5.3.Z and the X.5.Z protocol codes.
func preferStatus(field, text, reply string) string {
	if field == "" || len(field) < 5 {
		return text
	}
	if text == "" || len(text) < 5 || field == text {
		return field
	}
	if reply != "" && field[0] != text[0] {
		if reply[0] == field[0] {
			return field
		}
		if reply[0] == text[0] {
			return text
		}
	}
	fieldZero, textZero := strings.Contains(field, ".0"), strings.Contains(text, ".0")
	if strings.Contains(field, ".0.0") {
		if strings.Contains(text, ".0.0") {
			return field
		}
		return text
	}
	switch {
	case fieldZero && !textZero:
		return text
	case strings.Contains(text, ".0.0"):
		return field
	case field == "4.4.7" || field == "4.7.0" || strings.HasPrefix(field, "5.3."):
		return text
	case len(field) > 3 && field[1:4] == ".5." && strings.IndexByte("1245", field[4]) >= 0 && (len(field) == 5 || field[5] == '.'):
		return text
	case field == "5.1.1":
		if textZero || strings.HasPrefix(text, "5.5.") {
			return field
		}
		return text
	case field == "5.1.3" && strings.HasPrefix(text, "5.7."):
		return text
	}
	return field
}

// gmailStates are the steps of Gmail's outgoing SMTP session that its
// bounces name ("... Header error (state 18)."): the command and the reason
// a failure at that step means.
var gmailStates = map[string]struct{ cmd, reason string }{
	"6": {"MAIL", ReasonSystemError}, "8": {"AUTH", ReasonSystemError}, "9": {"AUTH", ReasonSystemError},
	"12": {"AUTH", ReasonNoRelaying}, "13": {"EHLO", ReasonBlocked}, "14": {"RCPT", ReasonUserUnknown},
	"15": {"DATA", ReasonFiltered}, "17": {"DATA", ReasonFiltered}, "18": {"DATA", ReasonFiltered},
}

// gmailState returns the command and reason of the "(state N)" that ends
// a reply relayed by Gmail.
func gmailState(diag string) (cmd, reason string, ok bool) {
	// The step ends the reply: look at its last parenthesis only.
	i := strings.LastIndexByte(diag, '(') - 1
	if i < 0 || !strings.HasPrefix(diag[i:], " (state ") {
		return "", "", false
	}
	n, _, found := strings.Cut(diag[i+8:], ")")
	if !found {
		return "", "", false
	}
	st, ok := gmailStates[n]
	return st.cmd, st.reason, ok
}
