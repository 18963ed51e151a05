// Package redisstore is the Redis engine of outbox.Store (SPEC section 7),
// on a go-redis UniversalClient: a single node, a Sentinel-managed master or
// a Cluster.
//
// # Keyspace
//
// Every key is built in keys.go, which lists each with its Redis type. The
// keyspace is split into a fixed number of partitions (16 by default); an
// answer belongs to one of them, derived from its id, and every key of a
// partition (answer records, bodies, the due queue, the queue-age and
// await sets, the list and reference indexes, the event queue) carries the
// partition's hash tag, "{p07}". So every script touches the keys of one
// Cluster slot. Workers and event consumers serve all partitions: Lease and
// ClaimEvents peek at every partition in one pipeline and claim from those
// holding the oldest entries; Lookup asks every partition's index in one
// pipeline.
//
// # Transitions
//
// The rules live once, in the pure state-machine methods of *outbox.Answer.
// A transition reads the record (Lease already did), applies the method to
// a copy, and runs one Lua script (lua/*.lua, each with a KEYS/ARGV/returns
// header) that compare-and-sets the record on its Version and, in the same
// atomic step, updates the due queue, the queue-age, await and status sets
// and appends the new events to the answer's event list. Lease and claim
// tokens are checked in the same scripts. On a version conflict the store
// reads again and re-applies, a bounded number of times. A write carries a
// nonce, so when go-redis retries a script whose reply was lost, the retry
// reports success instead of a conflict.
//
// Accept streams the body into a temporary key with a TTL, which the accept
// script renames while it creates the record, the indexes and the
// answer.scheduled event: a body of up to one chunk (256 KiB) with one SET
// in the same pipeline as the script, a larger one chunk by chunk (SETRANGE
// at its offset) before it. A crash or an error midway leaves at most
// that temporary key, which expires by itself; no part of the answer is
// visible.
//
// # Events
//
// Each answer has a list of its events and a small hash with the number
// acknowledged and the state of the head event's claim. Per partition, a
// sorted set holds the answers with unacknowledged events, scored by when
// their head event is claimable. ClaimEvents claims only an answer's head
// event, moving its score to the end of the claim, so an answer's events go
// out in sequence order and no event is held by two consumers.
//
// # Failures
//
// Every failure to reach Redis, and every refusal to serve (LOADING,
// READONLY, CLUSTERDOWN, ...), is wrapped in outbox.ErrUnavailable, which
// the SMTP side turns into a 451 reply (RFC 5321 section 4.2.3). Each
// script checks everything before its first write, so an error leaves
// nothing half-written. Durability across a restart is Redis's: run it with
// appendonly yes.
package redisstore
