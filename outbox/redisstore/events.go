package redisstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox"
)

// ClaimEvents hands up to max head events to consumer until now+ttl: one
// pipeline peeks at every partition's event queue, a second runs the claim
// script on the partitions holding the oldest.
func (s *Store) ClaimEvents(ctx context.Context, consumer string, max int, ttl time.Duration) ([]*outbox.EventClaim, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("redisstore: claim events: %w: ttl %v", outbox.ErrInvalid, ttl)
	}
	now := s.now()
	until := now.Add(ttl)
	prefix := token()
	score := map[string]float64{}
	var out []*outbox.EventClaim
	err := s.claimBatches(ctx, max, s.k.eventQueue, us(now),
		func(p int, cs []candidate, limit int) scriptCall {
			keys := []string{s.k.eventQueue(p)}
			args := []any{us(now), us(until), limit, prefix, consumer}
			for _, c := range cs {
				keys = append(keys, s.k.events(c.id), s.k.eventState(c.id))
				args = append(args, c.id)
				score[c.id] = c.score
			}
			return scriptCall{script: scriptClaimEvents, keys: keys, args: args}
		},
		func(cmd *redis.Cmd) (int, error) {
			res, err := cmd.StringSlice()
			if err != nil {
				return 0, classify("claim events", err)
			}
			for i := 0; i+4 < len(res); i += 5 {
				c, err := decodeClaim(res[i:i+5], until)
				if err != nil {
					return 0, err
				}
				out = append(out, c)
			}
			return len(res) / 5, nil
		})
	if err != nil && len(out) == 0 {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *outbox.EventClaim) int {
		if c := cmp.Compare(score[a.Event.AnswerID], score[b.Event.AnswerID]); c != 0 {
			return c
		}
		return cmp.Compare(a.Event.ID, b.Event.ID)
	})
	return out, nil
}

// decodeClaim decodes one claim of claim_events.lua: event, token,
// attempts, first attempt µs, done JSON.
func decodeClaim(r []string, until time.Time) (*outbox.EventClaim, error) {
	e, err := decodeEvent(r[0])
	if err != nil {
		return nil, err
	}
	c := &outbox.EventClaim{Event: e, Token: r[1], Until: until}
	c.Attempts, _ = strconv.Atoi(r[2])
	if r[3] != "" {
		v, err := strconv.ParseInt(r[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore: decode claim: first attempt %q: %w", r[3], err)
		}
		c.FirstAttemptAt = fromUS(v)
	}
	if r[4] != "" {
		if err := json.Unmarshal([]byte(r[4]), &c.Done); err != nil {
			return nil, fmt.Errorf("redisstore: decode claim: done: %w", err)
		}
	}
	return c, nil
}

// decodeEvent decodes an event list entry, "<at µs> <JSON>".
func decodeEvent(s string) (outbox.Event, error) {
	var e outbox.Event
	_, j, ok := strings.Cut(s, " ")
	if !ok {
		return e, errors.New("redisstore: decode event: no time prefix")
	}
	if err := json.Unmarshal([]byte(j), &e); err != nil {
		return e, fmt.Errorf("redisstore: decode event: %w", err)
	}
	return e, nil
}

// AckEvent marks a claimed event handled; the answer's next event becomes
// claimable at once.
func (s *Store) AckEvent(ctx context.Context, c *outbox.EventClaim) error {
	if err := s.open(); err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("redisstore: ack event: %w: no claim", outbox.ErrInvalid)
	}
	id := c.Event.AnswerID
	p := s.k.partition(id)
	return runCode(ctx, s.c, "ack event", c.Event.ID, scriptAckEvent,
		[]string{s.k.eventQueue(p), s.k.eventAge(p), s.k.events(id), s.k.eventState(id)},
		[]any{id, c.Token, us(s.now())})
}

// RetryEvent ends a claim; the same event is claimable again at at, with
// the endpoints of c.Done and done remembered.
func (s *Store) RetryEvent(ctx context.Context, c *outbox.EventClaim, at time.Time, done []string) error {
	if err := s.open(); err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("redisstore: retry event: %w: no claim", outbox.ErrInvalid)
	}
	all := slices.Clone(c.Done)
	for _, d := range done {
		if !slices.Contains(all, d) {
			all = append(all, d)
		}
	}
	dj, err := json.Marshal(all)
	if err != nil {
		return fmt.Errorf("redisstore: retry event: %w", err)
	}
	if len(all) == 0 {
		dj = nil
	}
	id := c.Event.AnswerID
	p := s.k.partition(id)
	return runCode(ctx, s.c, "retry event", c.Event.ID, scriptRetryEvent,
		[]string{s.k.eventQueue(p), s.k.eventState(id)},
		[]any{id, c.Token, us(at), dj})
}

// EventStats returns the event backlog: answers with unacknowledged events
// and the time of the oldest such event.
func (s *Store) EventStats(ctx context.Context) (outbox.EventStats, error) {
	if err := s.open(); err != nil {
		return outbox.EventStats{}, err
	}
	n, oldest, err := s.zstats(ctx, s.k.eventQueue, s.k.eventAge)
	if err != nil {
		return outbox.EventStats{}, classify("event stats", err)
	}
	return outbox.EventStats{Pending: n, Oldest: oldest}, nil
}

// AddDeadLetter keeps an event an endpoint did not take. The same id again
// replaces the dead letter.
func (s *Store) AddDeadLetter(ctx context.Context, d outbox.DeadLetter) error {
	if err := s.open(); err != nil {
		return err
	}
	if d.ID == "" {
		d.ID = outbox.DeadLetterID(d.Event.ID, d.Endpoint)
	}
	j, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("redisstore: add dead letter: %w", err)
	}
	old, err := s.c.HGet(ctx, s.k.deadLetterRec(), d.ID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return classify("add dead letter", err)
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if len(old) >= memberWidth {
			p.ZRem(ctx, s.k.deadLetters(), old[:memberWidth]+":"+d.ID)
		}
		p.HSet(ctx, s.k.deadLetterRec(), d.ID, usPad(d.At)+string(j))
		p.ZAdd(ctx, s.k.deadLetters(), redis.Z{Member: member(d.At, d.ID)})
		return nil
	})
	if err != nil {
		return classify("add dead letter", err)
	}
	return nil
}

// ListDeadLetters lists dead letters, oldest first, limit at a time.
func (s *Store) ListDeadLetters(ctx context.Context, cursor string, limit int) ([]outbox.DeadLetter, string, error) {
	if err := s.open(); err != nil {
		return nil, "", err
	}
	lo := "-"
	if cursor != "" {
		m, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		lo = "(" + m
	}
	limit = pageLimit(limit)
	members, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k.deadLetters(), ByLex: true, Start: lo, Stop: "+", Count: int64(limit + 1)}).Result()
	if err != nil {
		return nil, "", classify("list dead letters", err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = encodeCursor(members[limit-1])
	}
	out := []outbox.DeadLetter{}
	if len(members) == 0 {
		return out, "", nil
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = memberID(m)
	}
	vals, err := s.c.HMGet(ctx, s.k.deadLetterRec(), ids...).Result()
	if err != nil {
		return nil, "", classify("list dead letters", err)
	}
	for _, v := range vals {
		sv, ok := v.(string)
		if !ok || len(sv) < memberWidth {
			continue // taken meanwhile
		}
		var d outbox.DeadLetter
		if err := json.Unmarshal([]byte(sv[memberWidth:]), &d); err != nil {
			return nil, "", fmt.Errorf("redisstore: decode dead letter: %w", err)
		}
		out = append(out, d)
	}
	return out, next, nil
}

// TakeDeadLetter removes a dead letter and returns it.
func (s *Store) TakeDeadLetter(ctx context.Context, id string) (outbox.DeadLetter, error) {
	var d outbox.DeadLetter
	if err := s.open(); err != nil {
		return d, err
	}
	v, err := scriptTakeDeadLetter.Run(ctx, s.c, []string{s.k.deadLetters(), s.k.deadLetterRec()}, id).Text()
	if errors.Is(err, redis.Nil) {
		return d, fmt.Errorf("redisstore: dead letter %s: %w", id, outbox.ErrNotFound)
	}
	if err != nil {
		return d, classify("take dead letter", err)
	}
	if len(v) < memberWidth {
		return d, fmt.Errorf("redisstore: dead letter %s: malformed record", id)
	}
	if err := json.Unmarshal([]byte(v[memberWidth:]), &d); err != nil {
		return d, fmt.Errorf("redisstore: decode dead letter: %w", err)
	}
	return d, nil
}

// SetEndpointDisabled records whether a webhook endpoint is disabled.
func (s *Store) SetEndpointDisabled(ctx context.Context, endpoint string, disabled bool) error {
	if err := s.open(); err != nil {
		return err
	}
	var err error
	if disabled {
		err = s.c.SAdd(ctx, s.k.disabledEndpoints(), endpoint).Err()
	} else {
		err = s.c.SRem(ctx, s.k.disabledEndpoints(), endpoint).Err()
	}
	if err != nil {
		return classify("set endpoint disabled", err)
	}
	return nil
}

// EndpointDisabled reports whether a webhook endpoint is disabled.
func (s *Store) EndpointDisabled(ctx context.Context, endpoint string) (bool, error) {
	if err := s.open(); err != nil {
		return false, err
	}
	v, err := s.c.SIsMember(ctx, s.k.disabledEndpoints(), endpoint).Result()
	if err != nil {
		return false, classify("endpoint disabled", err)
	}
	return v, nil
}
