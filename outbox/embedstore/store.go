// Package embedstore is the embedded engine of the outbox.Store contract
// (SPEC section 7): one local bbolt file (go.etcd.io/bbolt), the default
// store when no Redis is configured, for a single relay replica. It
// implements no wire protocol; the RFCs the stored data comes from are named
// in package outbox.
//
// bbolt runs one read-write transaction at a time, so every Store method
// that changes an answer is one transaction: it loads the record, applies
// the state machine method of package outbox to a copy, writes the result
// with its index entries and event-log entries, and commits (with fsync) or
// writes nothing. Bodies are streamed in chunks of 256 KB; a large body is
// written in several transactions under a fresh body key that becomes
// visible only when the answer record that names it is committed.
//
// The file holds no lock against a second process beyond bbolt's own flock:
// two relays cannot share it. Use the Redis engine for several replicas.
package embedstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/answer-relay/answer-relay/outbox"
)

// Options configure an embedded store.
type Options struct {
	// Clock tells the time; nil means time.Now.
	Clock outbox.Clock
}

// Store is the embedded outbox.Store. It is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	clock outbox.Clock
}

var _ outbox.Store = (*Store)(nil)

// Open opens (creating if needed) the store file at path and removes what
// an interrupted Accept left behind.
func Open(path string, opts Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("%w: embedstore: %w", outbox.ErrUnavailable, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w: embedstore: open %s: %w", outbox.ErrUnavailable, path, err)
	}
	// Writers that come together share one commit and one fsync; a lone
	// writer waits at most batchDelay for company.
	db.MaxBatchDelay = batchDelay
	s := &Store{db: db, clock: opts.Clock}
	if s.clock == nil {
		s.clock = time.Now
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return sweepBodies(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: embedstore: init %s: %w", outbox.ErrUnavailable, path, err)
	}
	return s, nil
}

// sweepBodies removes bodies no answer names: leftovers of an Accept that
// failed before its last transaction.
func sweepBodies(tx *bolt.Tx) error {
	refs := tx.Bucket(bktBodyRefs)
	named := map[string]bool{}
	if err := refs.ForEach(func(_, v []byte) error { named[string(v)] = true; return nil }); err != nil {
		return err
	}
	var orphans [][]byte
	if err := tx.Bucket(bktBodies).ForEach(func(k, _ []byte) error {
		if !named[string(k)] {
			orphans = append(orphans, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range orphans {
		if err := tx.Bucket(bktBodies).DeleteBucket(k); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file. Calls after Close fail with ErrUnavailable.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%w: embedstore: close: %w", outbox.ErrUnavailable, err)
	}
	return nil
}

// Ping checks that the file is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, func(*bolt.Tx) error { return nil })
}

// now is the clock's time without its monotonic reading.
func (s *Store) now() time.Time { return s.clock().Round(0) }

// domainErrors are returned as they are; anything else from bbolt is a
// failure of the file.
var domainErrors = []error{
	outbox.ErrNotFound, outbox.ErrExpired, outbox.ErrIllegalTransition, outbox.ErrLeaseLost,
	outbox.ErrDuplicate, outbox.ErrExists, outbox.ErrInvalid, outbox.ErrUnavailable,
	context.Canceled, context.DeadlineExceeded,
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	for _, d := range domainErrors {
		if errors.Is(err, d) {
			return err
		}
	}
	return fmt.Errorf("%w: embedstore: %w", outbox.ErrUnavailable, err)
}

func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return wrap(s.db.View(fn))
}

// batchDelay bounds how long a write waits to be committed together with
// others (bbolt's DB.Batch).
const batchDelay = time.Millisecond

// update runs fn in a read-write transaction, batched with concurrent
// writers by bbolt's DB.Batch. fn may run more than once (bbolt re-runs
// the functions of a batch in which one failed), so it must set its
// results afresh on each run.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return wrap(s.db.Batch(fn))
}

// present is the value of index keys whose presence is what matters. It is
// not empty: within a read-write transaction bbolt's Get returns nil for a
// key written with an empty value, which made such a key look absent.
var present = []byte{1}

// token returns a fresh random token for a lease, claim or body key.
func token() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loadAnswer reads answer id: ErrNotFound, or ErrExpired for a tombstone.
func loadAnswer(tx *bolt.Tx, id string) (*outbox.Answer, error) {
	v := tx.Bucket(bktAnswers).Get([]byte(id))
	if v == nil {
		if id != "" && tx.Bucket(bktTombs).Get([]byte(id)) != nil {
			return nil, fmt.Errorf("%w: answer %s", outbox.ErrExpired, id)
		}
		return nil, fmt.Errorf("%w: answer %q", outbox.ErrNotFound, id)
	}
	var a outbox.Answer
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("embedstore: answer %s: %w", id, err)
	}
	return &a, nil
}

// indexEntry is one key an answer has in an index bucket.
type indexEntry struct {
	bucket string
	key    string
}

// indexEntries lists the index keys of a, except the due queue and the
// event log, which depend on more than the record.
func indexEntries(a *outbox.Answer) []indexEntry {
	if a == nil {
		return nil
	}
	out := []indexEntry{{string(bktByStatus), string(join(string(a.Status), a.ID))}}
	if a.TicketID != "" {
		out = append(out, indexEntry{string(bktByTicket), string(join(a.TicketID, a.ID))})
	}
	for _, r := range []struct {
		key   outbox.LookupKey
		value string
	}{{outbox.ByAnswerRef, a.AnswerRef}, {outbox.ByMessageID, a.MessageID}, {outbox.ByEnvelopeID, a.EnvelopeID}} {
		if r.value != "" {
			out = append(out, indexEntry{string(bktRefs), string(join(string(r.key), r.value, a.ID))})
		}
	}
	if a.Awaiting() {
		out = append(out, indexEntry{string(bktAwaiting), string(tsKey(a.QueuedAt, a.ID))})
	}
	if a.Queued() {
		out = append(out, indexEntry{string(bktQueued), string(tsKey(a.QueuedAt, a.ID))})
	} else {
		out = append(out, indexEntry{string(bktFinished), string(tsKey(a.AcceptedAt, a.ID))})
	}
	return out
}

// put writes after in place of before (nil for a new answer; after nil
// deletes the record) with every index entry, the due queue and the event
// log brought in line.
func (s *Store) put(tx *bolt.Tx, before, after *outbox.Answer) error {
	old, cur := indexEntries(before), indexEntries(after)
	keep := map[indexEntry]bool{}
	for _, e := range cur {
		keep[e] = true
	}
	for _, e := range old {
		if !keep[e] {
			if err := tx.Bucket([]byte(e.bucket)).Delete([]byte(e.key)); err != nil {
				return err
			}
		}
	}
	for _, e := range cur {
		if err := tx.Bucket([]byte(e.bucket)).Put([]byte(e.key), present); err != nil {
			return err
		}
	}
	if after == nil {
		id := before.ID
		if err := setDue(tx, id, nil); err != nil {
			return err
		}
		if err := tx.Bucket(bktLeases).Delete([]byte(id)); err != nil {
			return err
		}
		if err := dropEvents(tx, id); err != nil {
			return err
		}
		return tx.Bucket(bktAnswers).Delete([]byte(id))
	}

	// The due queue: a queued answer is due at NextAttemptAt unless a lease
	// holds it (then its due key is the lease's end); an answer that left
	// the queue has no due key and no lease.
	if after.Queued() {
		if tx.Bucket(bktLeases).Get([]byte(after.ID)) == nil {
			t := after.NextAttemptAt
			if err := setDue(tx, after.ID, &t); err != nil {
				return err
			}
		}
	} else {
		if err := setDue(tx, after.ID, nil); err != nil {
			return err
		}
		if err := tx.Bucket(bktLeases).Delete([]byte(after.ID)); err != nil {
			return err
		}
	}

	// The event log: events added to an answer with nothing pending are
	// claimable at once.
	var n int
	if before != nil {
		n = len(before.Events)
	}
	if len(after.Events) > n {
		if err := s.eventsAdded(tx, after); err != nil {
			return err
		}
	}

	if before != nil {
		after.Version = before.Version + 1
	} else {
		after.Version = 1
	}
	v, err := json.Marshal(after)
	if err != nil {
		return err
	}
	return tx.Bucket(bktAnswers).Put([]byte(after.ID), v)
}

// setDue moves answer id's due key to time *at, or removes it for nil.
func setDue(tx *bolt.Tx, id string, at *time.Time) error {
	due, keys := tx.Bucket(bktDue), tx.Bucket(bktDueKeys)
	if k := keys.Get([]byte(id)); k != nil {
		if err := due.Delete(k); err != nil {
			return err
		}
	}
	if at == nil {
		return keys.Delete([]byte(id))
	}
	k := tsKey(*at, id)
	if err := due.Put(k, present); err != nil {
		return err
	}
	return keys.Put([]byte(id), k)
}

// update applies change to a copy of answer id and writes the result in one
// transaction. change returns an error to write nothing.
func (s *Store) change(ctx context.Context, id string, change func(tx *bolt.Tx, a *outbox.Answer, now time.Time) error) (*outbox.Answer, error) {
	var out *outbox.Answer
	err := s.update(ctx, func(tx *bolt.Tx) error {
		before, err := loadAnswer(tx, id)
		if err != nil {
			return err
		}
		after := before.Clone()
		if err := change(tx, after, s.now()); err != nil {
			return err
		}
		if err := s.put(tx, before, after); err != nil {
			return err
		}
		out = after
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
