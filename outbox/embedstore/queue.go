package embedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/answer-relay/answer-relay/outbox"
)

// lease is the stored form of an outbox.Lease.
type lease struct {
	Owner string    `json:"owner"`
	Token string    `json:"token"`
	Until time.Time `json:"until"`
}

// Lease hands out up to max due answers, oldest due first. A leased
// answer's due key moves to the end of the lease, so it is due again, for
// anyone, when the lease expires.
func (s *Store) Lease(ctx context.Context, owner string, max int, ttl time.Duration) ([]*outbox.Lease, error) {
	if max <= 0 {
		return nil, nil
	}
	var out []*outbox.Lease
	err := s.update(ctx, func(tx *bolt.Tx) error {
		out = out[:0]
		now := s.now()
		until := now.Add(ttl)
		var ids []string
		c := tx.Bucket(bktDue).Cursor()
		limit := ts(now)
		for k, _ := c.First(); k != nil && len(ids) < max && bytes.Compare(k[:8], limit) <= 0; k, _ = c.Next() {
			ids = append(ids, keyID(k))
		}
		for _, id := range ids {
			a, err := loadAnswer(tx, id)
			if err != nil {
				return err
			}
			l := lease{Owner: owner, Token: token(), Until: until}
			v, err := json.Marshal(l)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bktLeases).Put([]byte(id), v); err != nil {
				return err
			}
			if err := setDue(tx, id, &until); err != nil {
				return err
			}
			out = append(out, &outbox.Lease{Answer: a, Owner: owner, Token: l.Token, Until: until})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// checkLease returns ErrLeaseLost unless l is the lease held on its answer.
// A lease that expired but was not taken by anyone else still holds.
func checkLease(tx *bolt.Tx, l *outbox.Lease) error {
	if l == nil || l.Answer == nil {
		return fmt.Errorf("%w: no lease", outbox.ErrInvalid)
	}
	v := tx.Bucket(bktLeases).Get([]byte(l.Answer.ID))
	var cur lease
	if v != nil {
		if err := json.Unmarshal(v, &cur); err != nil {
			return fmt.Errorf("embedstore: lease of %s: %w", l.Answer.ID, err)
		}
	}
	if v == nil || cur.Token != l.Token {
		return fmt.Errorf("%w: answer %s", outbox.ErrLeaseLost, l.Answer.ID)
	}
	return nil
}

// RecordAttempt applies the attempt under the lease and ends the lease.
func (s *Store) RecordAttempt(ctx context.Context, l *outbox.Lease, att outbox.Attempt) (*outbox.Answer, error) {
	if l == nil || l.Answer == nil {
		return nil, fmt.Errorf("%w: no lease", outbox.ErrInvalid)
	}
	return s.change(ctx, l.Answer.ID, func(tx *bolt.Tx, a *outbox.Answer, now time.Time) error {
		if err := checkLease(tx, l); err != nil {
			return err
		}
		if _, err := a.ApplyAttempt(att, now); err != nil {
			return err
		}
		return tx.Bucket(bktLeases).Delete([]byte(a.ID))
	})
}

// ExtendLease moves the end of a lease still held to now+ttl.
func (s *Store) ExtendLease(ctx context.Context, l *outbox.Lease, ttl time.Duration) error {
	var until time.Time
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := checkLease(tx, l); err != nil {
			return err
		}
		until = s.now().Add(ttl)
		v, err := json.Marshal(lease{Owner: l.Owner, Token: l.Token, Until: until})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bktLeases).Put([]byte(l.Answer.ID), v); err != nil {
			return err
		}
		return setDue(tx, l.Answer.ID, &until)
	})
	if err != nil {
		return err
	}
	l.Until = until
	return nil
}

// Release ends a lease without an attempt; the answer is due at once.
func (s *Store) Release(ctx context.Context, l *outbox.Lease) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		if err := checkLease(tx, l); err != nil {
			return err
		}
		id := l.Answer.ID
		if err := tx.Bucket(bktLeases).Delete([]byte(id)); err != nil {
			return err
		}
		now := s.now()
		return setDue(tx, id, &now)
	})
}

// MarkDelayed marks answers with a scheduled recipient queued before
// queuedBefore, oldest first, and returns the events it wrote.
func (s *Store) MarkDelayed(ctx context.Context, queuedBefore time.Time, max int) ([]outbox.Event, error) {
	var events []outbox.Event
	err := s.update(ctx, func(tx *bolt.Tx) error {
		events = nil // bbolt may run a batched function more than once
		var ids []string
		c := tx.Bucket(bktAwaiting).Cursor()
		limit := ts(queuedBefore)
		for k, _ := c.First(); k != nil && len(ids) < max && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
			ids = append(ids, keyID(k))
		}
		now := s.now()
		for _, id := range ids {
			before, err := loadAnswer(tx, id)
			if err != nil {
				return err
			}
			after := before.Clone()
			added := after.MarkDelayed(now)
			if err := s.put(tx, before, after); err != nil {
				return err
			}
			events = append(events, added...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return events, nil
}

// RecordReport applies a delivery report to answer id and keeps its raw
// message, cut to outbox.MaxRawReport bytes.
func (s *Store) RecordReport(ctx context.Context, id string, rep outbox.Report, raw []byte) (*outbox.Answer, error) {
	if len(raw) > outbox.MaxRawReport {
		raw = raw[:outbox.MaxRawReport]
	}
	return s.change(ctx, id, func(tx *bolt.Tx, a *outbox.Answer, now time.Time) error {
		if _, err := a.ApplyReport(rep, now); err != nil {
			return err
		}
		if raw == nil {
			return nil
		}
		return tx.Bucket(bktRaws).Put(join(id, rep.ID), raw)
	})
}

// ReportRaw returns the raw message of a report of an answer.
func (s *Store) ReportRaw(ctx context.Context, answerID, reportID string) ([]byte, error) {
	var out []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if _, err := loadAnswer(tx, answerID); err != nil {
			return err
		}
		v := tx.Bucket(bktRaws).Get(join(answerID, reportID))
		if v == nil {
			return fmt.Errorf("%w: report %s of %s", outbox.ErrNotFound, reportID, answerID)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// Resend queues the undelivered recipients of answer id again.
func (s *Store) Resend(ctx context.Context, id string) (*outbox.Answer, error) {
	return s.change(ctx, id, func(_ *bolt.Tx, a *outbox.Answer, now time.Time) error {
		_, err := a.Resend(now)
		return err
	})
}

// QueueStats counts the queued answers and finds the oldest.
func (s *Store) QueueStats(ctx context.Context) (outbox.QueueStats, error) {
	var st outbox.QueueStats
	err := s.view(ctx, func(tx *bolt.Tx) error {
		st.Length, st.Oldest = countOldest(tx.Bucket(bktQueued))
		return nil
	})
	return st, err
}
