package redisstore

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// Every key the store uses is built in this file.
//
// The keyspace is split into a fixed number of partitions (SPEC section 7).
// An answer belongs to the partition fnv32a(id) mod Partitions, and every key
// of a partition carries that partition's hash tag, "{p07}", so all the keys
// one Lua script touches live in one Cluster slot. Keys that belong to no
// answer (unmatched bounces, dead letters, endpoint flags) carry the tag
// "{g}". The tag comes right after the prefix, before any id or reference
// value, so a "{" inside a Message-ID cannot move it.
//
// Two kinds of sorted set. Queues (due, age, await, evq, evage) are scored
// by Unix microseconds (exact in a float64 until the year 2255) from the
// store's injected clock. Lists (all, st:*, idx:*, unm, dl) have score 0 and
// members "<µs, 17 digits>:<id>" (see member), so they sort by time, then
// id, and a page continues exactly after the last member seen (ZRANGE
// BYLEX), even when many answers share one microsecond.
//
//	key                              type    holds
//	<P>:{pNN}:a:<id>                 hash    the answer: j = JSON record, v = version, n = nonce of the last write
//	<P>:{pNN}:body:<id>              string  the message body
//	<P>:{pNN}:tmp:<id>:<token>       string  a body being streamed in by Accept; has a TTL until the accept script renames it
//	<P>:{pNN}:raw:<id>               hash    report id → raw report message (at most outbox.MaxRawReport bytes)
//	<P>:{pNN}:gone:<id>              string  tombstone of an expired answer ("1", with a TTL)
//	<P>:{pNN}:ev:<id>                list    the answer's events, "<at µs> <JSON>", in sequence order
//	<P>:{pNN}:evs:<id>               hash    delivery state of the head event: acked, token, until, claimed, consumer, attempts, first, done
//	<P>:{pNN}:due                    zset    queued answer id → when it may be leased (NextAttemptAt, or lease end while leased)
//	<P>:{pNN}:leases                 hash    answer id → token of its current lease
//	<P>:{pNN}:age                    zset    queued answer id → QueuedAt (queue length and oldest age)
//	<P>:{pNN}:await                  zset    id of an answer with a scheduled recipient → QueuedAt (delay sweep)
//	<P>:{pNN}:all                    zset    member(AcceptedAt, id) of every answer (List, Expire)
//	<P>:{pNN}:st:<status>            zset    member(AcceptedAt, id), per answer status (List by status)
//	<P>:{pNN}:idx:<key>:<value>      zset    member(AcceptedAt, id), per reference (Lookup; ticket_id for List);
//	                                         no entry for a Lookup reference equal to the id (indexKeys)
//	<P>:{pNN}:evq                    zset    id of an answer with unacked events → when its head event is claimable
//	<P>:{pNN}:evage                  zset    id of an answer with unacked events → time of its head event
//	<P>:{g}:unm                      zset    member(ReceivedAt, report id) of every unmatched report
//	<P>:{g}:unm:rec                  hash    unmatched report id → JSON of outbox.Unmatched
//	<P>:{g}:unm:raw                  hash    unmatched report id → raw message
//	<P>:{g}:dl                       zset    member(At, dead letter id)
//	<P>:{g}:dl:rec                   hash    dead letter id → "<At µs, 17 digits><JSON of outbox.DeadLetter>"
//	<P>:{g}:ep:disabled              set     disabled webhook endpoints
type keys struct {
	prefix     string
	partitions int
	tags       []string // tags[p] = prefix + ":{pNN}:"
	global     string   // prefix + ":{g}:"
}

// byTicket is the reference index List uses for Filter.TicketID; it is not
// an outbox.LookupKey.
const byTicket = "ticket_id"

func newKeys(prefix string, partitions int) keys {
	k := keys{prefix: prefix, partitions: partitions, global: prefix + ":{g}:"}
	for p := range partitions {
		k.tags = append(k.tags, fmt.Sprintf("%s:{p%02d}:", prefix, p))
	}
	return k
}

// partition returns the partition of an answer id.
func (k keys) partition(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(k.partitions))
}

func (k keys) tag(id string) string { return k.tags[k.partition(id)] }

// Per-answer keys.
func (k keys) record(id string) string { return k.tag(id) + "a:" + id }
func (k keys) body(id string) string   { return k.tag(id) + "body:" + id }
func (k keys) tmpBody(id, token string) string {
	return k.tag(id) + "tmp:" + id + ":" + token
}
func (k keys) raw(id string) string        { return k.tag(id) + "raw:" + id }
func (k keys) tomb(id string) string       { return k.tag(id) + "gone:" + id }
func (k keys) events(id string) string     { return k.tag(id) + "ev:" + id }
func (k keys) eventState(id string) string { return k.tag(id) + "evs:" + id }

// Per-partition keys.
func (k keys) due(p int) string                     { return k.tags[p] + "due" }
func (k keys) leases(p int) string                  { return k.tags[p] + "leases" }
func (k keys) age(p int) string                     { return k.tags[p] + "age" }
func (k keys) await(p int) string                   { return k.tags[p] + "await" }
func (k keys) all(p int) string                     { return k.tags[p] + "all" }
func (k keys) status(p int, s outbox.Status) string { return k.tags[p] + "st:" + string(s) }
func (k keys) index(p int, key, value string) string {
	return k.tags[p] + "idx:" + key + ":" + value
}
func (k keys) eventQueue(p int) string { return k.tags[p] + "evq" }
func (k keys) eventAge(p int) string   { return k.tags[p] + "evage" }

// Global keys.
func (k keys) unmatched() string         { return k.global + "unm" }
func (k keys) unmatchedRec() string      { return k.global + "unm:rec" }
func (k keys) unmatchedRaw() string      { return k.global + "unm:raw" }
func (k keys) deadLetters() string       { return k.global + "dl" }
func (k keys) deadLetterRec() string     { return k.global + "dl:rec" }
func (k keys) disabledEndpoints() string { return k.global + "ep:disabled" }

// answerKeys is the block of KEYS every answer transition script takes
// first, in this order (see lua/prelude.lua):
//
//	1 record  2 tomb  3 due  4 leases  5 age  6 await  7 all
//	8 st:<old status>  9 st:<new status>  10 ev  11 evs  12 evq  13 evage
func (k keys) answerKeys(id string, oldStatus, newStatus outbox.Status) []string {
	p := k.partition(id)
	if oldStatus == "" {
		oldStatus = newStatus
	}
	return []string{
		k.record(id), k.tomb(id), k.due(p), k.leases(p), k.age(p), k.await(p), k.all(p),
		k.status(p, oldStatus), k.status(p, newStatus),
		k.events(id), k.eventState(id), k.eventQueue(p), k.eventAge(p),
	}
}

// indexKeys returns the reference index keys accept writes for an answer:
// one per non-empty reference it is found by, except a Lookup reference
// equal to the answer's own id (as the envelope id NewAnswer sets is):
// Lookup reads the answer with that id directly (see Store.Lookup), so that
// entry would only cost a write. The ticket index is always written, as
// List reads it.
func (k keys) indexKeys(a *outbox.Answer) []string {
	return k.refKeys(a, false)
}

// allIndexKeys returns every reference index key an answer may have an
// entry in, including those indexKeys leaves out (entries written before it
// did): Expire removes them all.
func (k keys) allIndexKeys(a *outbox.Answer) []string {
	return k.refKeys(a, true)
}

func (k keys) refKeys(a *outbox.Answer, all bool) []string {
	p := k.partition(a.ID)
	var out []string
	for _, r := range []struct {
		key, value string
		lookup     bool
	}{
		{string(outbox.ByAnswerRef), a.AnswerRef, true},
		{string(outbox.ByMessageID), a.MessageID, true},
		{string(outbox.ByEnvelopeID), a.EnvelopeID, true},
		{byTicket, a.TicketID, false},
	} {
		if r.value == "" || (!all && r.lookup && r.value == a.ID) {
			continue
		}
		out = append(out, k.index(p, r.key, r.value))
	}
	return out
}

// memberWidth is the width of the time part of a list member.
const memberWidth = 17

// member is the list member of an item at t with the given id: the Unix
// microseconds zero-padded to 17 digits, a colon, the id. Times before 1970
// count as 0.
func member(t time.Time, id string) string {
	return usPad(t) + ":" + id
}

// usPad is t in Unix microseconds, zero-padded to memberWidth digits.
func usPad(t time.Time) string {
	us := max(t.UnixMicro(), 0)
	return fmt.Sprintf("%0*d", memberWidth, us)
}

// memberID returns the id part of a list member.
func memberID(m string) string {
	if len(m) <= memberWidth+1 {
		return ""
	}
	return m[memberWidth+1:]
}

// validPrefix reports whether prefix can start every key: not empty and
// without the braces that would change the hash tag.
func validPrefix(prefix string) bool {
	return prefix != "" && !strings.ContainsAny(prefix, "{}")
}
