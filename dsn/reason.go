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

// phrases are the texts that name a reason in a diagnostic (lower case).
// They are about how mail servers word their errors, not about samples.
var phrases = map[string][]string{
	ReasonMailboxFull: {
		"mailbox full", "mailbox is full", "mailbox quota", "quota exceeded", "over quota", "overquota",
		"exceeded storage allocation", "mailbox exceeds", "disk quota", "user is over", "mailfolder is full",
		"insufficient disk space", "account is full", "mailbox has exceeded", "exceeds its quota",
		"mailbox size limit", "not enough storage", "quota full", "full mailbox", "maildir over quota",
		"mailbox is over", "has exceeded his/her disk space", "inbox is full", "boite du destinataire pleine",
		"mailbox would exceed", "user over quota", "exceeded the quota", "storage quota", "is over quota",
		"exceeds the storage", "the user's mailbox is full", "recipient's mailbox is full", "mailbox exceeded",
		"out of storage", "quota limit", "quota violation",
	},
	ReasonMesgTooBig: {
		"message too big", "message too large", "message is too large", "message size exceeds",
		"exceeds size limit", "message length exceeds", "size limit", "message exceeds maximum",
		"too large for this system", "message is larger than", "mail size", "message size limit",
		"size of the message exceeds", "message has exceeded the", "exceeded maximum message size",
	},
	ReasonExceedLimit: {"message header size exceeds limit", "too many recipients", "exceeds the limit",
		"recipient limit", "message too many recipients"},
	ReasonSuspend: {
		"account disabled", "account has been disabled", "account is disabled", "mailbox disabled",
		"mailbox is disabled", "account suspended", "account has been suspended", "account is suspended",
		"suspended", "mailbox unavailable: account", "account inactive", "account is inactive",
		"inactive account", "has been deactivated", "account deactivated", "mailbox is frozen",
		"is not active", "account expired", "this account has been", "mailbox is not active",
		"currently inactive", "disabled mailbox", "account is locked", "boite du destinataire archivee",
		"mailbox has been blocked due to inactivity", "mailbox temporarily disabled",
	},
	ReasonHasMoved: {"has been replaced by", "has moved", "no longer at this address", "address has changed",
		"no longer with", "no longer available"},
	ReasonNoRelaying: {
		"relay access denied", "relaying denied", "relay denied", "relaying not permitted",
		"not permitted to relay", "unable to relay", "relay not permitted", "we do not relay",
		"relaying mail to", "is not permitted to relay", "relay not allowed", "no relaying",
		"relaying is prohibited", "that domain isn't in my list of allowed rcpthosts",
		"not local host", "not a gateway", "relay prohibited", "cannot relay", "relaying disallowed",
		"domain isn't in my list of allowed rcpthosts",
	},
	ReasonAuthFailure: {
		"spf check", "spf fail", "spf validation", "spf record", "sender policy framework", "dmarc",
		"dkim", "authentication failed", "sender authentication", "unauthenticated email",
		"is not allowed to send mail from", "not designated", "5.7.23", "5.7.26", "5.7.27",
		"does not pass", "message failed authentication",
	},
	ReasonUserUnknown: {
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient", "user not found",
		"recipient not found", "mailbox not found", "unknown recipient", "recipient unknown", "invalid recipient",
		"invalid mailbox", "address unknown", "unknown address", "address does not exist", "not a valid mailbox",
		"no mailbox", "mailbox unavailable", "mailbox is unavailable", "user doesn't exist", "no such address",
		"bad destination mailbox", "unknown local part", "unknown or illegal alias", "unrouteable address",
		"user invalid", "invalid address", "addressee unknown", "not found in directory", "no one at this address",
		"invalid user", "unknown mailbox", "mailbox does not exist", "account does not exist",
		"user does not exist", "user account not found", "mailbox not present", "nonexistent user",
		"non-existent user", "non existent user", "utilisateur inconnu", "no existe", "inesistente",
		"user not exist", "recipient does not exist", "no such person", "name is not recognized",
		"destination address not found", "recipient is not local", "is not a known user", "mailbox unknown",
		"bad recipient", "badrcptto", "no valid recipients",
		"the email account that you tried to reach does not exist", "unknown e-mail address", "no mail box",
		"not a local address", "user is unknown", "address not found", "wasn't found at the destination",
		"recipientnotfound", "recipient not found", "email address could not be found", "does not exist here",
		"no such local user", "is not a valid user", "not our customer", "this user doesn't have a",
		"user missing home directory",
	},
	ReasonFiltered: {
		"due to content", "content filter", "filtered", "message rejected by filter", "rejected by filter",
		"denied by recipient", "refused by recipient", "message content rejected", "user refuses",
		"not accept mail from", "recipient refused", "blocked by the recipient", "by users mailfilter",
		"mail from this sender is not accepted", "sender is blocked by recipient",
		"rejected by recipient", "is not accepting mail from", "this user doesn't accept",
	},
	ReasonRequirePTR: {
		"no ptr", "ptr record", "reverse dns", "reverse lookup", "rdns", "cannot resolve your address",
		"no reverse", "cannot find your hostname", "cannot find your reverse hostname",
		"hostname does not resolve", "client host rejected: cannot find your", "fcrdns",
		"not have a ptr", "ip name lookup failed", "reverse mapping", "unresolvable",
		"hostname could not be found", "please set up a valid reverse", "without a ptr",
	},
	ReasonNotCompliantRFC: {"rfc 5322", "rfc5322", "rfc 2822", "rfc2822", "rfc 822", "rfc822 compliant",
		"not rfc compliant", "multiple addresses in from", "duplicate header", "bare lf", "bare line feed",
		"is not compliant with rfc", "missing date header", "missing message-id", "header is missing"},
	ReasonBadReputation: {"reputation", "sender score", "poor reputation", "low reputation",
		"ip address has a bad", "temporarily deferred due to unexpected volume"},
	ReasonContentError: {"message header", "improper use of 8-bit data", "headers are invalid",
		"invalid header", "illegal header", "malformed header", "message is not rfc", "content error",
		"charset", "encoding error", "line too long", "header too long"},
	ReasonRejected: {
		"sender rejected", "sender address rejected", "sender denied", "domain of sender address",
		"sender verify failed", "sender domain", "rejected sender", "invalid sender", "sender unknown",
		"unknown sender", "sender not", "bad sender", "sender verification", "return address",
		"sender is not allowed", "from address rejected", "envelope sender", "sender's domain",
		"sender does not exist", "senders are blocked", "sender blocked", "blacklisted sender",
	},
	ReasonHostUnknown: {
		"host unknown", "unknown host", "host not found", "domain not found", "no such domain",
		"domain does not exist", "name or service not known", "unrouteable mail domain", "unknown domain",
		"domain is not", "host or domain name not found", "hostname not found", "invalid domain",
		"domain name not found", "domain unknown", "unknown mail domain", "unresolvable host", "mail domain", "recipient domain", "recipient address domain",
		"nonexistent domain", "no route to host", "domain isn't in my list", "bad destination system address",
	},
	ReasonSpamDetected: {
		"spam", "junk mail", "bulk mail", "unsolicited", "message classified as", "high probability of",
		"score too high", "phishing", "ube,", "content rejected", "blacklisted url", "looks like spam", "content rejected as", "blocked by policy: spam",
		"spam score", "classified as spam",
	},
	ReasonSpeeding: {"rate limit", "too fast", "sending rate", "exceeded the rate", "rate-limit",
		"throttl", "too many messages", "ratelimit", "message rate", "rate control", "slow down",
		"try again later", "temporarily rate limited"},
	ReasonTooManyConn: {"too many connections", "too many concurrent", "too many simultaneous",
		"connection limit", "too many smtp sessions", "too many sessions", "maximum number of connections",
		"too many hosts", "connections from your", "too many open"},
	ReasonBlocked: {
		"access denied", "client host rejected", "connection rejected", "connection refused",
		"not allowed to send from", "dynamic ip", "dial-up", "dialup", "residential",
		"please use the smtp server of your isp", "smtp server of your isp", "use your isp", "your ip",
		"your host", "blacklisted", "black list", "block list", "blocklist", "spamhaus", "spamcop", "sorbs",
		"banned", "listed in", "listed at", "listed on", "not authorized to send",
		"has been temporarily rate limited", "refused to talk to me", "host rejected", "ip rejected",
		"connections not accepted from", "bad reputation", "poor reputation", "invalid helo",
		"helo command rejected", "reverse dns", "hostname lookup failed",
	},
	ReasonVirusDetected: {"virus", "malware", "infected", "trojan", "worm", "harmful", "executable",
		"attachment type", "banned attachment"},
	ReasonPolicyViolation: {"rejected for policy reasons", "blocked because its content", "header error", "policy", "violat", "not allowed by", "prohibited", "restricted",
		"message not allowed", "administrative prohibition", "local policy", "domain policy",
		"security policy", "organization", "this message has been blocked", "because of its content",
		"attachment", "not permitted"},
	ReasonSystemError: {"system error", "internal error", "server error", "local error", "temporary failure",
		"temporary error", "system failure", "server failure", "configuration error", "loop", "misconfigur",
		"service unavailable", "out of memory", "unavailable", "unable to", "connection closed", "lost connection", "i/o error", "deferred", "resources",
		"internal server", "processing error", "routing error",
		"problem"},
	ReasonNetworkError: {"name service error", "dns error", "name server", "lookup failure", "hop count",
		"routing loop", "too many hops", "lost connection", "could not connect", "unable to connect",
		"host is down", "could not be contacted", "mail loop"},
	ReasonSystemFull: {"system full", "disk full", "out of disk", "no space left", "insufficient system storage",
		"disk is full", "system storage", "file system full", "insufficient storage"},
	ReasonNotAccept: {"no mx", "mail exchanger", "doesn't receive email", "no smtp service", "does not accept mail", "not accept mail", "does not accept email", "null mx",
		"no mail service", "does not receive mail", "not accepting mail", "accepts no mail",
		"mail is not accepted", "domain does not accept"},
	ReasonExpired: {"expired", "timed out", "timeout exceeded", "unable to deliver this message after",
		"did not accept our requests to connect", "still undelivered", "could not be delivered for",
		"in the queue too long", "failing for a long time", "attempts:", "retry timeout", "retry time", "queue too long", "giving up",
		"given up", "delivery time", "could not be delivered within", "was not delivered within",
		"too long", "message timeout", "message expired", "undeliverable for", "delayed for",
		"not been delivered for", "were not able to deliver", "timed out", "time limit", "gave up",
		"in queue for", "has not yet been delivered", "still not delivered"},
	ReasonFailedSTARTTLS: {"starttls", "tls is required", "tls required", "requiretls", "dane",
		"mta-sts", "must issue a starttls", "encryption required", "tls negotiation"},
	ReasonSecurityError: {"authentication required", "authentication is required", "auth required",
		"must authenticate", "not authenticated", "authentication failure", "invalid credentials",
		"password", "security", "certificate", "encryption", "5.7.0", "access denied",
		"you are not allowed", "user not authorized", "unauthorized"},
	ReasonSuppressed: {"suppression list", "suppressed", "on the suppression"},
	ReasonMailerError: {"mailer error", "command output", "procmail", "pipe to", "exit code", "exit status",
		"command died", "x-unix", "program exited", "local delivery failed", "unknown mailer",
		"mail command failed", "couldn't create", "could not create"},
	ReasonSyntaxError: {"syntax error", "command unrecognized", "unrecognized command", "invalid command",
		"bad sequence", "command not implemented", "line too long", "unknown command",
		"command not recognized", "parameter not"},
	ReasonVacation: {"vacation", "out of office", "away from", "auto-reply", "autoreply", "automatic reply"},
}

// firstOrder is the order of the first pass: reasons a status code or a
// diagnostic names with little doubt.
var firstOrder = []string{
	ReasonMailboxFull, ReasonMesgTooBig, ReasonExceedLimit, ReasonSuspend, ReasonHasMoved,
	ReasonNoRelaying, ReasonAuthFailure, ReasonUserUnknown, ReasonFiltered, ReasonRequirePTR,
	ReasonNotCompliantRFC, ReasonBadReputation, ReasonContentError, ReasonRejected, ReasonNetworkError,
	ReasonNotAccept, ReasonHostUnknown, ReasonSpamDetected, ReasonSpeeding, ReasonTooManyConn,
	ReasonBlocked,
}

// secondOrder is the order of the second pass: diagnostic texts that only
// hint at a reason.
var secondOrder = []string{
	ReasonMailboxFull, ReasonAuthFailure, ReasonBadReputation, ReasonSpeeding, ReasonSpamDetected,
	ReasonVirusDetected, ReasonPolicyViolation, ReasonNoRelaying, ReasonExpired, ReasonSystemError,
	ReasonNetworkError, ReasonSuspend, ReasonContentError, ReasonSystemFull, ReasonNotAccept,
	ReasonFailedSTARTTLS, ReasonSecurityError, ReasonSuppressed, ReasonMailerError,
}

// has reports whether the lower-case text d contains a phrase of reason.
func has(reason, d string) bool {
	for _, p := range phrases[reason] {
		if strings.Contains(d, p) {
			return true
		}
	}
	return false
}

// classify decides the reason of one recipient from its status code,
// action, diagnostic and the SMTP command the error answered. A status code
// that names a reason decides unless the text names a more specific one; a
// phrase decides the rest, in an order that puts precise reasons before
// vague ones.
func classify(r *rcpt, status string) string {
	if r.reason != "" && !tentative[r.reason] {
		return r.reason
	}
	if strings.HasPrefix(status, "2.") {
		return ReasonDelivered
	}
	d := strings.ToLower(r.diag)
	byStatus := statusName(status)
	cmd := r.command
	if r.diagType == "SMTP" || r.diagType == "" {
		for _, reason := range firstOrder {
			if probe(reason, byStatus, cmd, d) {
				return reason
			}
		}
	}
	reason := byStatus
	if tentative[reason] || reason == "" || r.diagType != "SMTP" {
		for _, o := range secondOrder {
			if has(o, d) {
				return o
			}
		}
		if reason == "" {
			switch {
			case len(status) > 3 && status[2] == '6':
				reason = ReasonContentError
			case len(status) > 3 && status[2] == '7':
				reason = ReasonSecurityError
			case strings.HasPrefix(r.diagType, "X-UNIX"):
				reason = ReasonMailerError
			case has(ReasonSyntaxError, d):
				reason = ReasonSyntaxError
			case r.action == "delayed":
				reason = ReasonExpired
			case cmd == "HELO" || cmd == "EHLO":
				reason = ReasonBlocked
			}
		}
	}
	if reason == "" || reason == ReasonUndefined {
		switch {
		case r.action == "delayed":
			return ReasonExpired
		case has(ReasonVacation, d):
			return ReasonVacation
		case d != "":
			return ReasonOnHold
		}
		return ReasonUndefined
	}
	return reason
}

// beforeData are the SMTP commands after which a server has not seen the
// message yet, so it cannot have filtered it.
var beforeData = map[string]bool{"HELO": true, "EHLO": true, "MAIL": true, "RCPT": true, "CONN": true, "STARTTLS": true}

// probe reports whether reason applies, given the reason the status code
// names, the SMTP command and the lower-case diagnostic.
func probe(reason, byStatus, cmd, d string) bool {
	switch reason {
	case ReasonUserUnknown:
		if byStatus == ReasonUserUnknown {
			for _, o := range []string{ReasonMailboxFull, ReasonHasMoved, ReasonRejected, ReasonNotAccept, ReasonBlocked} {
				if has(o, d) {
					return false
				}
			}
			return true
		}
		if !has(ReasonUserUnknown, d) {
			return false
		}
		// A text about the recipient or the mailbox answers RCPT even
		// when the bounce does not name the command.
		return cmd == "RCPT" || cmd == "" && (strings.Contains(d, "recipient") || strings.Contains(d, "mailbox") ||
			strings.Contains(d, "address"))
	case ReasonFiltered:
		if byStatus == ReasonFiltered {
			return has(ReasonUserUnknown, d) || has(ReasonFiltered, d)
		}
		if beforeData[cmd] {
			return false
		}
		return has(ReasonFiltered, d) || has(ReasonUserUnknown, d)
	}
	if byStatus == reason {
		return true
	}
	return has(reason, d)
}

// commandOf finds the SMTP command an error answered in the text of a
// bounce: the last one the text names.
func commandOf(text string) string {
	l := strings.ToLower(text)
	best, at := "", -1
	for _, c := range []struct{ phrase, cmd string }{
		{"rcpt to", "RCPT"}, {"rcpt command", "RCPT"}, {"after rcpt", "RCPT"}, {">>> rcpt", "RCPT"},
		{"mail from", "MAIL"}, {"mail command", "MAIL"}, {"after mail", "MAIL"}, {">>> mail", "MAIL"},
		{"end of data", "DATA"}, {"after data", "DATA"}, {"data command", "DATA"}, {">>> data", "DATA"},
		{"smtp:rcpt", "RCPT"}, {"rcpt_to", "RCPT"}, {"in reply to rcpt", "RCPT"},
		{"ehlo", "EHLO"}, {"helo", "HELO"}, {"starttls", "STARTTLS"},
	} {
		if i := strings.LastIndex(l, c.phrase); i > at {
			best, at = c.cmd, i
		}
	}
	return best
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
	diag := clip(squeeze(r.diag))
	r.context = clip(r.context)
	r.diag = diag
	reply := findReplyCode(diag)
	status := r.status
	if !validStatus(status) {
		status = ""
	}
	if s := findStatus(diag); s != "" {
		if status == "" || (strings.HasSuffix(status, ".0.0") && s[0] == status[0] && !strings.HasSuffix(s, ".0.0")) {
			status = s
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
	reason := classify(r, status)
	if status == "" {
		class := "5"
		if strings.HasPrefix(reply, "4") || action == "delayed" && reason != ReasonExpired {
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

// isTemporary reports whether the text of a bounce says the failure is
// temporary and delivery is still being tried.
func isTemporary(text string) bool {
	l := strings.ToLower(text)
	for _, p := range []string{"will be retried", "will retry", "still trying", "not yet been delivered",
		"delivery is delayed", "delayed", "temporary failure", "this is a temporary error",
		"warning: message", "will continue to try", "deferred"} {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}
