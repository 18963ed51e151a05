package embedstore

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The buckets of the file. Every key and value layout is written here, next
// to its bucket; "ts" is a time as 8 bytes big-endian Unix nanoseconds, so
// byte order is time order.
var (
	// answers: id → JSON outbox.Answer.
	bktAnswers = []byte("answers")
	// tombs: id → ts of expiry, for answers deleted after retention.
	bktTombs = []byte("tombs")
	// bodies: body key → nested bucket of chunks, chunk number (4 bytes
	// big-endian) → at most chunkSize bytes. A body key is the answer id,
	// a dot and a random suffix, so two Accepts of one id never write into
	// the same bucket; a body without a bodyRefs entry is a leftover of a
	// failed Accept and is removed.
	bktBodies = []byte("bodies")
	// bodyRefs: answer id → body key.
	bktBodyRefs = []byte("body_refs")
	// raws: answer id, 0, report id → raw report message.
	bktRaws = []byte("raws")

	// byStatus: status, 0, id → "".
	bktByStatus = []byte("by_status")
	// byTicket: ticket id, 0, id → "".
	bktByTicket = []byte("by_ticket")
	// refs: lookup key, 0, value, 0, id → "".
	bktRefs = []byte("refs")
	// awaiting: ts(QueuedAt), id → "" for answers with a scheduled
	// recipient (the MarkDelayed sweep).
	bktAwaiting = []byte("awaiting")
	// queued: ts(QueuedAt), id → "" for answers with a pending recipient
	// (QueueStats).
	bktQueued = []byte("queued")
	// finished: ts(AcceptedAt), id → "" for answers no longer queued (the
	// Expire sweep).
	bktFinished = []byte("finished")

	// due: ts(due time), id → "" for queued answers. The due time is
	// NextAttemptAt, or the end of the lease while one is held, so an
	// expired lease makes the answer due again by itself.
	bktDue = []byte("due")
	// dueKeys: id → its key in due.
	bktDueKeys = []byte("due_keys")
	// leases: id → JSON lease.
	bktLeases = []byte("leases")

	// evState: answer id → JSON evState (acknowledged count and the
	// delivery state of the first unacknowledged event).
	bktEvState = []byte("ev_state")
	// evReady: ts(ready), answer id → "" for answers with an
	// unacknowledged event: ready is when its first unacknowledged event
	// may be claimed (now, a retry time, or the end of a claim).
	bktEvReady = []byte("ev_ready")
	// evHead: ts(event time), answer id → "": the time of each answer's
	// first unacknowledged event (EventStats).
	bktEvHead = []byte("ev_head")

	// unmatched: ts(received), report id → JSON unmatchedRecord.
	bktUnmatched = []byte("unmatched")
	// unmatchedIDs: report id → its key in unmatched.
	bktUnmatchedIDs = []byte("unmatched_ids")
	// dead: ts(at), dead letter id → JSON outbox.DeadLetter.
	bktDead = []byte("dead")
	// deadIDs: dead letter id → its key in dead.
	bktDeadIDs = []byte("dead_ids")
	// endpoints: endpoint → "1" when disabled.
	bktEndpoints = []byte("endpoints")
)

var allBuckets = [][]byte{
	bktAnswers, bktTombs, bktBodies, bktBodyRefs, bktRaws,
	bktByStatus, bktByTicket, bktRefs, bktAwaiting, bktQueued, bktFinished,
	bktDue, bktDueKeys, bktLeases,
	bktEvState, bktEvReady, bktEvHead,
	bktUnmatched, bktUnmatchedIDs, bktDead, bktDeadIDs, bktEndpoints,
}

// ts encodes t for a key; the zero time and times before 1970 sort first.
func ts(t time.Time) []byte {
	var b [8]byte
	if !t.IsZero() && t.UnixNano() > 0 {
		binary.BigEndian.PutUint64(b[:], uint64(t.UnixNano()))
	}
	return b[:]
}

// tsKey is ts(t) followed by id.
func tsKey(t time.Time, id string) []byte { return append(ts(t), id...) }

// keyTime decodes the time at the start of a tsKey.
func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
}

// countOldest counts the keys of a bucket of tsKeys and returns the time of
// the first, the oldest; zero when the bucket is empty.
func countOldest(b *bolt.Bucket) (n int, oldest time.Time) {
	if k, _ := b.Cursor().First(); k != nil {
		oldest = keyTime(k)
	}
	return b.Stats().KeyN, oldest
}

// keyID is the id after the time of a tsKey.
func keyID(k []byte) string { return string(k[8:]) }

// join joins key parts with a 0 byte.
func join(parts ...string) []byte {
	var b bytes.Buffer
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(p)
	}
	return b.Bytes()
}

// lastPart is the id after the last 0 byte of an index key.
func lastPart(k []byte) string { return string(k[bytes.LastIndexByte(k, 0)+1:]) }

func chunkKey(i uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i)
	return b[:]
}
