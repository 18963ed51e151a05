// Package relay is the main path of answer-relay: the SMTP submission
// listener that accepts a helpdesk's answers, and the delivery workers that
// forward them to the existing mail account's server (SPEC sections 1–3, 9).
//
// Submission (RFC 6409) is served with go-smtp: EHLO with PIPELINING
// (RFC 2920), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), SIZE (RFC 1870),
// ENHANCEDSTATUSCODES (RFC 2034, RFC 3463) and DSN (RFC 3461); STARTTLS
// (RFC 3207) and an optional implicit-TLS listener (RFC 8314 section 3.3);
// AUTH PLAIN (RFC 4616) and LOGIN (RFC 4954) against bcrypt hashes, only over
// TLS unless the client is on loopback and insecure AUTH is allowed
// (RFC 8314 section 3). A client must authenticate or come from an allowed
// network; everyone else gets 530 (never an open relay, RFC 5321
// section 3.9). A message is tagged with the answer id header, given a
// Message-ID when it has none (RFC 6409 section 8.3; an existing one is
// never rewritten), streamed into the store, and acknowledged with
// "250 2.0.0 OK: queued as <id>" only after the store has it; a store
// failure is 451 4.3.0 and keeps nothing.
//
// Delivery leases due answers (and extends the leases while it works on
// them), reuses upstream connections across answers, sends ENVID and
// RET=HDRS on MAIL and NOTIFY on RCPT when the upstream offers DSN
// (RFC 3461 section 4), optionally a VERP envelope sender, and records each
// recipient's outcome. One function, classify, maps a reply to
// an outcome: 5xx is permanent (RFC 5321 section 4.2.1), 4xx and network
// errors are temporary and retried on the configured schedule with jitter
// until the maximum lifetime, when they become permanent with reason
// "expired". A secondary upstream takes over while the primary fails. The
// sweeper marks answers queued longer than delay_after as delayed and
// expires answers past retention.
package relay
