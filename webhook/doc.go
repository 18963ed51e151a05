// Package webhook posts the outbox's events to the helpdesk (SPEC section
// 5): a Dispatcher consumes the store's event log and posts each event to
// every configured endpoint whose filter takes it, signed per the Standard
// Webhooks specification (webhook-id, webhook-timestamp, webhook-signature
// "v1,<base64 HMAC-SHA256>", whsec_ secrets, several at once for
// rotation) with the reference library.
//
// Delivery is at least once. The webhook-id is the event id
// ("<answer id>-<seq>"), the same on every retry, so receivers can drop
// duplicates. Events of one answer go out in sequence order: the store
// hands out only an answer's first unacknowledged event, and the next one
// only after it is acknowledged. Different answers go out in parallel, up
// to Config.Workers per replica; replicas sharing a store never post one
// event at the same time, because an event is claimed by one consumer for
// Config.ClaimTTL and a POST stops a tenth of that before the claim lapses.
//
// Replies are classified in one place (see post): 2xx succeeds; network
// errors, timeouts, 5xx, 408 (RFC 9110 section 15.5.9) and 429 (RFC 6585
// section 4) are retried with exponential backoff and jitter, never sooner
// than Retry-After (RFC 9110 section 10.2.3) says, until Config.MaxAge after
// the first attempt, then dead-lettered; 410 Gone (RFC 9110 section
// 15.5.11) disables the endpoint until an operator enables it again; any
// other 4xx dead-letters the event at once. Reply bodies are read up to
// 1 KiB. Dead letters are listed by the store and replayed by
// Dispatcher.Replay.
//
// The JSON body and its versioned data are documented in docs/webhooks.md;
// timestamps are RFC 3339 (section 5.6) in UTC.
package webhook
