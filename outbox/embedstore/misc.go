package embedstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/answer-relay/answer-relay/outbox"
)

// unmatchedRecord is a kept bounce that matched no answer, with its raw
// message.
type unmatchedRecord struct {
	outbox.Unmatched
	Raw []byte `json:"raw,omitempty"`
}

// RecordUnmatched keeps a bounce that matched no answer.
func (s *Store) RecordUnmatched(ctx context.Context, rep outbox.Report, raw []byte) error {
	if rep.ID == "" {
		return fmt.Errorf("%w: report without an id", outbox.ErrInvalid)
	}
	if len(raw) > outbox.MaxRawReport {
		raw = raw[:outbox.MaxRawReport]
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		ids := tx.Bucket(bktUnmatchedIDs)
		if ids.Get([]byte(rep.ID)) != nil {
			return fmt.Errorf("%w: unmatched report %s", outbox.ErrDuplicate, rep.ID)
		}
		at := rep.ReceivedAt
		if at.IsZero() {
			at = s.now()
		}
		k := tsKey(at, rep.ID)
		v, err := json.Marshal(unmatchedRecord{outbox.Unmatched{Report: rep}, raw})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bktUnmatched).Put(k, v); err != nil {
			return err
		}
		return ids.Put([]byte(rep.ID), k)
	})
}

// decodeCursor turns a cursor back into the key it names.
func decodeCursor(cursor string) ([]byte, error) {
	if cursor == "" {
		return nil, nil
	}
	k, err := hex.DecodeString(cursor)
	if err != nil || len(k) < 8 {
		return nil, fmt.Errorf("%w: cursor %q", outbox.ErrInvalid, cursor)
	}
	return k, nil
}

// ListUnmatched lists unmatched bounces, newest first.
func (s *Store) ListUnmatched(ctx context.Context, cursor string, limit int) ([]outbox.Unmatched, string, error) {
	before, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	limit = pageLimit(limit)
	var out []outbox.Unmatched
	next := ""
	err = s.view(ctx, func(tx *bolt.Tx) error {
		var ferr error
		var last []byte
		reverseScan(tx.Bucket(bktUnmatched), nil, before, func(k []byte) bool {
			if len(out) == limit {
				next = hex.EncodeToString(last)
				return false
			}
			var u unmatchedRecord
			if ferr = json.Unmarshal(tx.Bucket(bktUnmatched).Get(k), &u); ferr != nil {
				return false
			}
			out = append(out, u.Unmatched)
			last = append(last[:0], k...)
			return true
		})
		return ferr
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// CountUnmatched counts the unmatched bounces kept.
func (s *Store) CountUnmatched(ctx context.Context) (int, error) {
	n := 0
	err := s.view(ctx, func(tx *bolt.Tx) error {
		n = tx.Bucket(bktUnmatchedIDs).Stats().KeyN
		return nil
	})
	return n, err
}

// AddDeadLetter keeps an event an endpoint did not take, replacing an
// earlier dead letter with the same id.
func (s *Store) AddDeadLetter(ctx context.Context, d outbox.DeadLetter) error {
	if d.ID == "" {
		d.ID = outbox.DeadLetterID(d.Event.ID, d.Endpoint)
	}
	if d.At.IsZero() {
		d.At = s.now()
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		dead, ids := tx.Bucket(bktDead), tx.Bucket(bktDeadIDs)
		if old := ids.Get([]byte(d.ID)); old != nil {
			if err := dead.Delete(old); err != nil {
				return err
			}
		}
		k := tsKey(d.At, d.ID)
		v, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := dead.Put(k, v); err != nil {
			return err
		}
		return ids.Put([]byte(d.ID), k)
	})
}

// ListDeadLetters lists dead letters, oldest first.
func (s *Store) ListDeadLetters(ctx context.Context, cursor string, limit int) ([]outbox.DeadLetter, string, error) {
	after, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	limit = pageLimit(limit)
	var out []outbox.DeadLetter
	next := ""
	err = s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bktDead).Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		var last []byte
		for ; k != nil; k, v = c.Next() {
			if len(out) == limit {
				next = hex.EncodeToString(last)
				break
			}
			var d outbox.DeadLetter
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("embedstore: dead letter %q: %w", keyID(k), err)
			}
			out = append(out, d)
			last = append(last[:0], k...)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// TakeDeadLetter removes a dead letter and returns it.
func (s *Store) TakeDeadLetter(ctx context.Context, id string) (outbox.DeadLetter, error) {
	var d outbox.DeadLetter
	err := s.update(ctx, func(tx *bolt.Tx) error {
		dead, ids := tx.Bucket(bktDead), tx.Bucket(bktDeadIDs)
		k := ids.Get([]byte(id))
		if k == nil {
			return fmt.Errorf("%w: dead letter %q", outbox.ErrNotFound, id)
		}
		k = append([]byte(nil), k...)
		if err := json.Unmarshal(dead.Get(k), &d); err != nil {
			return fmt.Errorf("embedstore: dead letter %q: %w", id, err)
		}
		if err := dead.Delete(k); err != nil {
			return err
		}
		return ids.Delete([]byte(id))
	})
	return d, err
}

// SetEndpointDisabled records whether a webhook endpoint is disabled.
func (s *Store) SetEndpointDisabled(ctx context.Context, endpoint string, disabled bool) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktEndpoints)
		if disabled {
			return b.Put([]byte(endpoint), []byte("1"))
		}
		return b.Delete([]byte(endpoint))
	})
}

// EndpointDisabled reports whether a webhook endpoint is disabled.
func (s *Store) EndpointDisabled(ctx context.Context, endpoint string) (bool, error) {
	var off bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		off = tx.Bucket(bktEndpoints).Get([]byte(endpoint)) != nil
		return nil
	})
	return off, err
}

// Expire deletes up to max answers accepted before acceptedBefore that are
// no longer queued, oldest first, with their bodies, raw reports, events
// and index entries, and keeps a tombstone for each.
func (s *Store) Expire(ctx context.Context, acceptedBefore time.Time, max int) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		var ids []string
		c := tx.Bucket(bktFinished).Cursor()
		limit := ts(acceptedBefore)
		for k, _ := c.First(); k != nil && len(ids) < max && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
			ids = append(ids, keyID(k))
		}
		now := s.now()
		for _, id := range ids {
			a, err := loadAnswer(tx, id)
			if err != nil {
				return err
			}
			if err := s.put(tx, a, nil); err != nil {
				return err
			}
			if err := deleteBody(tx, id); err != nil {
				return err
			}
			if err := deletePrefix(tx.Bucket(bktRaws), append([]byte(id), 0)); err != nil {
				return err
			}
			if err := tx.Bucket(bktTombs).Put([]byte(id), ts(now)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

func deleteBody(tx *bolt.Tx, id string) error {
	refs := tx.Bucket(bktBodyRefs)
	k := refs.Get([]byte(id))
	if k == nil {
		return nil
	}
	if err := tx.Bucket(bktBodies).DeleteBucket(append([]byte(nil), k...)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
		return err
	}
	return refs.Delete([]byte(id))
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
