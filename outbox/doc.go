// Package outbox is the domain of answer-relay: the record kept for every
// outbound answer, its delivery statuses and their legal transitions, the
// per-answer event sequence, and the Store contract that the storage engines
// (outbox/redisstore, outbox/embedstore) implement.
//
// The state machine lives here as pure methods on *Answer (Transition-style
// methods such as ApplyAttempt, ApplyReport, MarkDelayed and Resend) so both
// engines share one implementation of the rules of SPEC section 2; an engine
// only has to persist the result of a method, its index updates and the events
// it returned, atomically.
//
// Statuses are kept per recipient. The answer's status is the worst of its
// recipients' (not_delivered > delayed > scheduled > sent > delivered). Every
// change of the answer's status is one Event with the next per-answer sequence
// number; a repeated transition changes nothing and emits nothing.
package outbox
