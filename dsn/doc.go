// Package dsn reads bounces: it parses one raw message (RFC 5322) into a
// Report listing, per bounced recipient, the action, the enhanced status code
// (RFC 3463), the SMTP reply code, the diagnostic text, the remote MTA and a
// reason from Sisimai's taxonomy, plus the identifiers of the returned message
// that let a caller match the bounce to what it sent.
//
// It understands delivery status notifications of RFC 3464 (section 2, the
// message/delivery-status fields, in a multipart/report of RFC 6522) and their
// internationalised form of RFC 6533 (message/global-delivery-status), feedback
// reports of RFC 5965 (section 3, reason "feedback"), automatic replies marked
// as RFC 3834 section 5 says (reason "vacation"), and the free-text bounce
// layouts of common MTAs and mail providers. Enhanced status codes are looked
// up in the table of RFC 3463 section 3 and the IANA registry (RFC 5248).
//
// Parse streams its input: it keeps at most a bounded prefix of every part and
// of the whole message, so memory stays bounded for input of any size.
package dsn
