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

// evState is the event-log position of one answer: how many of its events
// were acknowledged and, while one is pending, the delivery state of the
// first unacknowledged one.
type evState struct {
	Acked int64 `json:"acked"`
	// Ready is when the pending event may be claimed: its key in evReady.
	Ready time.Time `json:"ready,omitzero"`
	// Head is the time of the pending event: its key in evHead.
	Head     time.Time `json:"head,omitzero"`
	Token    string    `json:"token,omitempty"`
	Consumer string    `json:"consumer,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	First    time.Time `json:"first,omitzero"`
	Done     []string  `json:"done,omitempty"`
}

func loadEvState(tx *bolt.Tx, id string) (*evState, error) {
	var st evState
	if v := tx.Bucket(bktEvState).Get([]byte(id)); v != nil {
		if err := json.Unmarshal(v, &st); err != nil {
			return nil, fmt.Errorf("embedstore: event state of %s: %w", id, err)
		}
	}
	return &st, nil
}

// saveEvState writes st and moves the answer's evReady and evHead keys from
// those of old (nil for none) to those of st; pending says whether st has
// an unacknowledged event.
func saveEvState(tx *bolt.Tx, id string, old, st *evState, pending bool) error {
	ready, head := tx.Bucket(bktEvReady), tx.Bucket(bktEvHead)
	if old != nil {
		if err := ready.Delete(tsKey(old.Ready, id)); err != nil {
			return err
		}
		if err := head.Delete(tsKey(old.Head, id)); err != nil {
			return err
		}
	}
	if pending {
		if err := ready.Put(tsKey(st.Ready, id), present); err != nil {
			return err
		}
		if err := head.Put(tsKey(st.Head, id), present); err != nil {
			return err
		}
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bktEvState).Put([]byte(id), v)
}

// eventsAdded makes a's new events claimable: at once if nothing of a was
// pending, else after the pending ones.
func (s *Store) eventsAdded(tx *bolt.Tx, a *outbox.Answer) error {
	st, err := loadEvState(tx, a.ID)
	if err != nil {
		return err
	}
	if st.Acked < int64(len(a.Events)) && tx.Bucket(bktEvHead).Get(tsKey(st.Head, a.ID)) != nil {
		return nil // already pending; the new events wait their turn
	}
	old := *st
	st.Ready = s.now()
	st.Head = a.Events[st.Acked].At
	return saveEvState(tx, a.ID, &old, st, true)
}

// dropEvents forgets the event log of answer id.
func dropEvents(tx *bolt.Tx, id string) error {
	v := tx.Bucket(bktEvState).Get([]byte(id))
	if v == nil {
		return nil
	}
	st, err := loadEvState(tx, id)
	if err != nil {
		return err
	}
	if err := saveEvState(tx, id, st, st, false); err != nil {
		return err
	}
	return tx.Bucket(bktEvState).Delete([]byte(id))
}

// ClaimEvents hands out the first unacknowledged event of up to max answers
// whose ready time has come, earliest ready first.
func (s *Store) ClaimEvents(ctx context.Context, consumer string, max int, ttl time.Duration) ([]*outbox.EventClaim, error) {
	if max <= 0 {
		return nil, nil
	}
	var out []*outbox.EventClaim
	err := s.update(ctx, func(tx *bolt.Tx) error {
		out = out[:0]
		now := s.now()
		var ids []string
		c := tx.Bucket(bktEvReady).Cursor()
		limit := ts(now)
		for k, _ := c.First(); k != nil && len(ids) < max && bytes.Compare(k[:8], limit) <= 0; k, _ = c.Next() {
			ids = append(ids, keyID(k))
		}
		for _, id := range ids {
			a, err := loadAnswer(tx, id)
			if err != nil {
				return err
			}
			st, err := loadEvState(tx, id)
			if err != nil {
				return err
			}
			if st.Acked >= int64(len(a.Events)) {
				return fmt.Errorf("embedstore: answer %s is ready with no pending event", id)
			}
			old := *st
			st.Token, st.Consumer, st.Ready = token(), consumer, now.Add(ttl)
			if err := saveEvState(tx, id, &old, st, true); err != nil {
				return err
			}
			out = append(out, &outbox.EventClaim{
				Event: a.Events[st.Acked], Attempts: st.Attempts, FirstAttemptAt: st.First,
				Done: append([]string(nil), st.Done...), Token: st.Token, Until: st.Ready,
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// settleClaim checks that c is the live claim of its answer's first
// unacknowledged event, then lets next change the state and saves it.
func (s *Store) settleClaim(ctx context.Context, c *outbox.EventClaim, next func(a *outbox.Answer, st *evState, now time.Time)) error {
	if c == nil {
		return fmt.Errorf("%w: no claim", outbox.ErrInvalid)
	}
	id := c.Event.AnswerID
	return s.update(ctx, func(tx *bolt.Tx) error {
		a, err := loadAnswer(tx, id)
		if err != nil {
			return fmt.Errorf("%w: event %s: %w", outbox.ErrLeaseLost, c.Event.ID, err)
		}
		st, err := loadEvState(tx, id)
		if err != nil {
			return err
		}
		if c.Token == "" || st.Token != c.Token || st.Acked+1 != c.Event.Seq {
			return fmt.Errorf("%w: event %s", outbox.ErrLeaseLost, c.Event.ID)
		}
		old := *st
		next(a, st, s.now())
		return saveEvState(tx, id, &old, st, st.Acked < int64(len(a.Events)))
	})
}

// AckEvent marks the claimed event handled; the answer's next event is
// ready at once.
func (s *Store) AckEvent(ctx context.Context, c *outbox.EventClaim) error {
	return s.settleClaim(ctx, c, func(a *outbox.Answer, st *evState, now time.Time) {
		*st = evState{Acked: st.Acked + 1}
		if st.Acked < int64(len(a.Events)) {
			st.Ready, st.Head = now, a.Events[st.Acked].At
		}
	})
}

// RetryEvent ends the claim; the same event is ready again at at.
func (s *Store) RetryEvent(ctx context.Context, c *outbox.EventClaim, at time.Time, done []string) error {
	return s.settleClaim(ctx, c, func(_ *outbox.Answer, st *evState, now time.Time) {
		st.Token, st.Consumer, st.Ready = "", "", at
		st.Attempts++
		if st.First.IsZero() {
			st.First = now
		}
		st.Done = append([]string(nil), done...)
	})
}

// EventStats counts answers with a pending event and finds the oldest.
func (s *Store) EventStats(ctx context.Context) (outbox.EventStats, error) {
	var st outbox.EventStats
	err := s.view(ctx, func(tx *bolt.Tx) error {
		st.Pending, st.Oldest = countOldest(tx.Bucket(bktEvHead))
		return nil
	})
	return st, err
}
