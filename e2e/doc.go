// Package e2e runs answer-relay end to end against software nobody here
// wrote: the built binary (answer-relay serve) on a private redis-server,
// a private Postfix instance as the helpdesk's existing mail account,
// swaks and Python's smtplib as submission clients, and a webhook receiver
// that checks every signature with the Standard Webhooks library.
//
// Everything listens on 127.0.0.1 only, on ports the kernel hands out; the
// Postfix instance has its own main.cf, master.cf, queue and data
// directories in a temporary directory (postfix -c DIR), never the system's
// /etc/postfix, and is stopped when the test ends.
//
// What is exercised, by the protocol documents:
//   - RFC 6409 submission to the relay, with SMTP AUTH (RFC 4954) after
//     STARTTLS (RFC 3207), and refusal of unauthenticated clients outside
//     the allowed networks;
//   - the relay's delivery to Postfix with STARTTLS, AUTH and the DSN
//     extension (RFC 3461 section 4: ENVID and RET on MAIL, NOTIFY on
//     RCPT);
//   - Postfix's own RFC 3464 delivery status notifications (success,
//     failure with status 5.1.1, delay), sent back to the relay's VERP
//     address and read by its bounce listener;
//   - the status machine, webhooks and delivery report of the relay's API.
//
// The tests need postfix, saslpasswd2 (sasl2-bin), the Cyrus SASL plain and
// sasldb modules (libsasl2-modules), swaks, python3 and redis-server, and
// must run as root, as postfix start does. Without them they are skipped,
// unless CI=true, where they fail. Run them alone with
//
//	go test ./e2e -v
package e2e
