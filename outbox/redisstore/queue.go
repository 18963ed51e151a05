package redisstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox"
)

// candidate is an entry of a per-partition queue (due, evq, await).
type candidate struct {
	p     int
	id    string
	score float64
}

// peek returns up to n entries per partition of the queue key(p) scored at
// most hi (exclusive when excl), in one pipeline, merged oldest first.
func (s *Store) peek(ctx context.Context, key func(int) string, hi int64, excl bool, n int) ([]candidate, error) {
	stop := strconv.FormatInt(hi, 10)
	if excl {
		stop = "(" + stop
	}
	cmds := make([]*redis.ZSliceCmd, s.k.partitions)
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key(i), ByScore: true, Start: "-inf", Stop: stop, Count: int64(n)})
		}
		return nil
	})
	if err != nil {
		return nil, classify("peek", err)
	}
	var out []candidate
	for p, cmd := range cmds {
		for _, z := range cmd.Val() {
			out = append(out, candidate{p: p, id: z.Member.(string), score: z.Score})
		}
	}
	sortCandidates(out)
	return out, nil
}

func sortCandidates(cs []candidate) {
	slices.SortFunc(cs, func(a, b candidate) int {
		if c := cmp.Compare(a.score, b.score); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
}

// claimRounds bounds the claim rounds of Lease and ClaimEvents when racing
// callers take the candidates first; peekRounds bounds how often one call
// peeks at the queues.
const claimRounds, peekRounds = 6, 2

// claimBatches runs claim rounds. It peeks at the queue key(p) of every
// partition, picks candidates, and for each partition among them runs the
// claim script built by call (with that partition's candidates, the picked
// ones first, and the number picked there as limit). take decodes one script
// reply and returns how many items it claimed.
//
// The first round picks the oldest candidates. A later round means another
// caller took some of them, so it picks at random among those left: racing
// callers then spread over the queue instead of all going for the next
// oldest. Later rounds reuse the first peek while it has candidates left;
// the scripts check that each is still due.
func (s *Store) claimBatches(ctx context.Context, max int, key func(int) string, now int64,
	call func(p int, cs []candidate, limit int) scriptCall, take func(cmd *redis.Cmd) (int, error)) error {
	got, peeks := 0, 0
	tried := map[string]bool{}
	var pool []candidate // peeked, not tried yet, oldest first
	for round := range claimRounds {
		need := max - got
		if need <= 0 {
			return nil
		}
		if len(pool) == 0 {
			if peeks == peekRounds {
				return nil
			}
			peeks++
			all, err := s.peek(ctx, key, now, false, need+candidateSlack)
			if err != nil {
				return err
			}
			for _, c := range all {
				if !tried[c.id] {
					pool = append(pool, c)
				}
			}
			if len(pool) == 0 {
				return nil
			}
		}
		picked := pool[:min(need, len(pool))]
		if round > 0 {
			picked = slices.Clone(pool)
			rand.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
			picked = picked[:min(need, len(picked))]
		}
		quota := map[int]int{}
		perPart := map[int][]candidate{}
		for _, c := range picked {
			quota[c.p]++
			perPart[c.p] = append(perPart[c.p], c)
			tried[c.id] = true
		}
		var rest []candidate
		for _, c := range pool {
			switch {
			case tried[c.id]:
			case quota[c.p] > 0:
				perPart[c.p] = append(perPart[c.p], c)
				tried[c.id] = true
			default:
				rest = append(rest, c)
			}
		}
		pool = rest
		var calls []scriptCall
		for p := range s.k.partitions {
			if quota[p] > 0 {
				calls = append(calls, call(p, perPart[p], quota[p]))
			}
		}
		for _, cmd := range runPipelined(ctx, s.c, calls) {
			n, err := take(cmd)
			if err != nil {
				return err
			}
			got += n
		}
	}
	return nil
}

// Lease hands up to max due answers to owner until now+ttl, oldest due
// first. It peeks at every partition's due queue in one pipeline, then runs
// the lease script on the partitions holding the oldest: two round trips.
func (s *Store) Lease(ctx context.Context, owner string, max int, ttl time.Duration) ([]*outbox.Lease, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("redisstore: lease: %w: ttl %v", outbox.ErrInvalid, ttl)
	}
	now := s.now()
	until := now.Add(ttl)
	prefix := token()
	score := map[string]float64{}
	var out []*outbox.Lease
	err := s.claimBatches(ctx, max, s.k.due, us(now),
		func(p int, cs []candidate, limit int) scriptCall {
			keys := []string{s.k.due(p), s.k.leases(p)}
			args := []any{us(now), us(until), limit, prefix}
			for _, c := range cs {
				keys = append(keys, s.k.record(c.id))
				args = append(args, c.id)
				score[c.id] = c.score
			}
			return scriptCall{script: scriptLease, keys: keys, args: args}
		},
		func(cmd *redis.Cmd) (int, error) {
			res, err := cmd.StringSlice()
			if err != nil {
				return 0, classify("lease", err)
			}
			for i := 0; i+2 < len(res); i += 3 {
				a, err := decodeAnswer([]byte(res[i+2]))
				if err != nil {
					return 0, err
				}
				out = append(out, &outbox.Lease{Answer: a, Owner: owner, Token: res[i+1], Until: until})
			}
			return len(res) / 3, nil
		})
	if err != nil && len(out) == 0 {
		return nil, err
	}
	// Leases already taken are handed out even if a later round failed:
	// dropping them would hide the answers until the leases expire.
	slices.SortFunc(out, func(a, b *outbox.Lease) int {
		if c := cmp.Compare(score[a.Answer.ID], score[b.Answer.ID]); c != 0 {
			return c
		}
		return cmp.Compare(a.Answer.ID, b.Answer.ID)
	})
	return out, nil
}

// errNoChange tells update that the state machine changed nothing, so
// there is nothing to write.
var errNoChange = errors.New("redisstore: nothing to change")

// MarkDelayed marks up to max answers delayed that have a scheduled
// recipient and were queued before queuedBefore, oldest queued first, and
// returns the events it wrote.
func (s *Store) MarkDelayed(ctx context.Context, queuedBefore time.Time, max int) ([]outbox.Event, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	cands, err := s.peek(ctx, s.k.await, us(queuedBefore), true, max)
	if err != nil {
		return nil, err
	}
	var events []outbox.Event
	for _, c := range cands[:min(max, len(cands))] {
		var added []outbox.Event // of the last apply: update may retry it
		_, err := s.update(ctx, c.id, nil, transition{
			op: "mark delayed", script: scriptMarkDelayed,
			apply: func(a *outbox.Answer, now time.Time) ([]outbox.Event, error) {
				if !a.Awaiting() || !a.QueuedAt.Before(queuedBefore) {
					return nil, errNoChange
				}
				added = a.MarkDelayed(now)
				return added, nil
			},
		})
		switch {
		case err == nil:
			events = append(events, added...)
		case errors.Is(err, errNoChange), errors.Is(err, outbox.ErrNotFound), errors.Is(err, outbox.ErrExpired):
		default:
			return events, err
		}
	}
	return events, nil
}

// QueueStats returns the queue length and the oldest queued answer, from
// every partition's age set in one pipeline.
func (s *Store) QueueStats(ctx context.Context) (outbox.QueueStats, error) {
	if err := s.open(); err != nil {
		return outbox.QueueStats{}, err
	}
	n, oldest, err := s.zstats(ctx, s.k.age, s.k.age)
	if err != nil {
		return outbox.QueueStats{}, classify("queue stats", err)
	}
	return outbox.QueueStats{Length: n, Oldest: oldest}, nil
}

// zstats sums ZCARD of count(p) and finds the lowest score of oldest(p)
// over every partition, in one pipeline.
func (s *Store) zstats(ctx context.Context, count, oldest func(int) string) (int, time.Time, error) {
	cards := make([]*redis.IntCmd, s.k.partitions)
	heads := make([]*redis.ZSliceCmd, s.k.partitions)
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cards {
			cards[i] = p.ZCard(ctx, count(i))
			heads[i] = p.ZRangeWithScores(ctx, oldest(i), 0, 0)
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	n := 0
	var low *float64
	for i := range cards {
		n += int(cards[i].Val())
		if h := heads[i].Val(); len(h) > 0 && (low == nil || h[0].Score < *low) {
			low = &h[0].Score
		}
	}
	var t time.Time
	if low != nil {
		t = fromUS(int64(*low))
	}
	return n, t, nil
}

// Expire deletes up to max answers accepted before acceptedBefore that are
// no longer queued, oldest first, leaving tombstones.
func (s *Store) Expire(ctx context.Context, acceptedBefore time.Time, max int) (int, error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	if max <= 0 {
		return 0, nil
	}
	hi := "(" + usPad(acceptedBefore.Add(time.Microsecond-1))
	offsets := make([]int64, s.k.partitions)
	done := make([]bool, s.k.partitions)
	deleted := 0
	for range 20 {
		if deleted >= max {
			break
		}
		batch := int64(max - deleted + 16)
		cmds := make([]*redis.StringSliceCmd, s.k.partitions)
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range cmds {
				if !done[i] {
					cmds[i] = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k.all(i), ByLex: true, Start: "-", Stop: hi, Offset: offsets[i], Count: batch})
				}
			}
			return nil
		})
		if err != nil {
			return deleted, classify("expire", err)
		}
		var members []string
		for i, cmd := range cmds {
			if cmd == nil {
				continue
			}
			ms := cmd.Val()
			offsets[i] += int64(len(ms))
			done[i] = int64(len(ms)) < batch
			members = append(members, ms...)
		}
		if len(members) == 0 {
			break
		}
		slices.Sort(members)
		answers, err := s.records(ctx, members)
		if err != nil {
			return deleted, err
		}
		var calls []scriptCall
		for i, a := range answers {
			if a == nil || a.Queued() || !a.AcceptedAt.Before(acceptedBefore) || deleted+len(calls) >= max {
				continue
			}
			keys := append(s.k.answerKeys(a.ID, a.Status, a.Status), s.k.body(a.ID), s.k.raw(a.ID))
			keys = append(keys, s.k.allIndexKeys(a)...)
			calls = append(calls, scriptCall{script: scriptExpire, keys: keys,
				args: []any{a.ID, a.Version, s.tombTT.Milliseconds(), members[i]}})
		}
		for _, cmd := range runPipelined(ctx, s.c, calls) {
			code, err := cmd.Text()
			if err != nil {
				return deleted, classify("expire", err)
			}
			if code == "OK" {
				deleted++
			}
		}
		if !slices.Contains(done, false) {
			break
		}
	}
	return deleted, nil
}

// records loads the answers of list members in one pipeline; an answer
// that is gone is nil.
func (s *Store) records(ctx context.Context, members []string) ([]*outbox.Answer, error) {
	cmds := make([]*redis.StringCmd, len(members))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.HGet(ctx, s.k.record(memberID(m)), "j")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, classify("load answers", err)
	}
	out := make([]*outbox.Answer, len(members))
	for i, cmd := range cmds {
		j, err := cmd.Bytes()
		if err != nil {
			continue
		}
		var a outbox.Answer
		if err := json.Unmarshal(j, &a); err != nil {
			return nil, fmt.Errorf("redisstore: decode answer: %w", err)
		}
		out[i] = &a
	}
	return out, nil
}
