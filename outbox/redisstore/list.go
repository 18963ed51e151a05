package redisstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox"
)

// encodeCursor turns the last list member of a page into an opaque cursor.
func encodeCursor(m string) string { return base64.RawURLEncoding.EncodeToString([]byte(m)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) <= memberWidth || b[memberWidth] != ':' {
		return "", fmt.Errorf("redisstore: %w: bad cursor", outbox.ErrInvalid)
	}
	return string(b), nil
}

// pageLimit applies the default and the maximum page size.
func pageLimit(n int) int {
	switch {
	case n <= 0:
		return defaultPage
	case n > maxPage:
		return maxPage
	}
	return n
}

// Lookup returns the most recent answer whose reference under key is
// value: one pipeline asks every partition's index for its newest entry and
// reads the answer whose id is value (a reference equal to the answer's own
// id has no index entry, see keys.indexKeys), then the newest of those is
// read.
func (s *Store) Lookup(ctx context.Context, key outbox.LookupKey, value string) (*outbox.Answer, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	switch key {
	case outbox.ByAnswerRef, outbox.ByMessageID, outbox.ByEnvelopeID:
	default:
		return nil, fmt.Errorf("redisstore: lookup: %w: unknown key %q", outbox.ErrInvalid, key)
	}
	if value == "" {
		return nil, fmt.Errorf("redisstore: lookup %s: %w", key, outbox.ErrNotFound)
	}
	for range casRetries {
		cmds := make([]*redis.StringSliceCmd, s.k.partitions)
		var self *redis.StringCmd
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range cmds {
				cmds[i] = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k.index(i, string(key), value), ByLex: true, Rev: true, Start: "+", Stop: "-", Count: 1})
			}
			self = p.HGet(ctx, s.k.record(value), "j")
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, classify("lookup", err)
		}
		newest := ""
		for _, cmd := range cmds {
			if v := cmd.Val(); len(v) > 0 && v[0] > newest {
				newest = v[0]
			}
		}
		var own *outbox.Answer
		if j, err := self.Bytes(); err == nil {
			a, err := decodeAnswer(j)
			if err != nil {
				return nil, err
			}
			if reference(a, key) == value {
				own = a
			}
		}
		if own != nil && member(own.AcceptedAt, own.ID) >= newest {
			return own, nil
		}
		if newest == "" {
			return nil, fmt.Errorf("redisstore: lookup %s %q: %w", key, value, outbox.ErrNotFound)
		}
		a, err := s.Get(ctx, memberID(newest))
		if errors.Is(err, outbox.ErrNotFound) || errors.Is(err, outbox.ErrExpired) {
			continue // expired between the two reads: its index entry is gone now
		}
		return a, err
	}
	return nil, fmt.Errorf("redisstore: lookup %s %q: %w", key, value, outbox.ErrNotFound)
}

// reference returns the reference of a under a Lookup key.
func reference(a *outbox.Answer, key outbox.LookupKey) string {
	switch key {
	case outbox.ByAnswerRef:
		return a.AnswerRef
	case outbox.ByMessageID:
		return a.MessageID
	case outbox.ByEnvelopeID:
		return a.EnvelopeID
	}
	return ""
}

// List returns answers matching f, newest first. It reads the narrowest
// list that serves the filter (the ticket's index, the status set, or all
// answers) from every partition, merges them by (AcceptedAt, id) and keeps
// what matches the rest of the filter. The cursor is the last list member
// of the page, so it stays valid while answers are added.
func (s *Store) List(ctx context.Context, f outbox.Filter) (outbox.Page, error) {
	if err := s.open(); err != nil {
		return outbox.Page{}, err
	}
	if f.Status != "" && !f.Status.Valid() {
		return outbox.Page{}, fmt.Errorf("redisstore: list: %w: status %q", outbox.ErrInvalid, f.Status)
	}
	limit := pageLimit(f.Limit)
	src := s.k.all
	switch {
	case f.TicketID != "":
		src = func(p int) string { return s.k.index(p, byTicket, f.TicketID) }
	case f.Status != "":
		src = func(p int) string { return s.k.status(p, f.Status) }
	}
	match := func(a *outbox.Answer) bool {
		return (f.Status == "" || a.Status == f.Status) &&
			(f.TicketID == "" || a.TicketID == f.TicketID) &&
			(f.AcceptedFrom.IsZero() || !a.AcceptedAt.Before(f.AcceptedFrom)) &&
			(f.AcceptedTo.IsZero() || a.AcceptedAt.Before(f.AcceptedTo))
	}
	// Bounds of the lexicographic range, newest (hi) to oldest (lo).
	lo, hi := "-", "+"
	if !f.AcceptedFrom.IsZero() {
		lo = "[" + usPad(f.AcceptedFrom)
	}
	if !f.AcceptedTo.IsZero() {
		hi = "(" + usPad(f.AcceptedTo.Add(time.Microsecond-1))
	}
	if f.Cursor != "" {
		m, err := decodeCursor(f.Cursor)
		if err != nil {
			return outbox.Page{}, err
		}
		if hi == "+" || "("+m < hi {
			hi = "(" + m
		}
	}
	page := outbox.Page{Answers: []*outbox.Answer{}}
	last := ""
	for range 50 {
		need := limit - len(page.Answers)
		members, more, err := s.newest(ctx, src, hi, lo, need)
		if err != nil {
			return outbox.Page{}, err
		}
		answers, err := s.records(ctx, members)
		if err != nil {
			return outbox.Page{}, err
		}
		for i, a := range answers {
			if a != nil && match(a) {
				page.Answers = append(page.Answers, a)
			}
			last = members[i]
		}
		if !more {
			return page, nil
		}
		hi = "(" + last
		if len(page.Answers) >= limit {
			break
		}
	}
	page.Next = encodeCursor(last)
	return page, nil
}

// newest returns the n newest members of the list src(p) over every
// partition within the lexicographic range [lo, hi] (Redis range syntax),
// newest first, and whether there are more.
func (s *Store) newest(ctx context.Context, src func(int) string, hi, lo string, n int) ([]string, bool, error) {
	cmds := make([]*redis.StringSliceCmd, s.k.partitions)
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: src(i), ByLex: true, Rev: true, Start: hi, Stop: lo, Count: int64(n + 1)})
		}
		return nil
	})
	if err != nil {
		return nil, false, classify("list", err)
	}
	var all []string
	for _, cmd := range cmds {
		all = append(all, cmd.Val()...)
	}
	slices.Sort(all)
	slices.Reverse(all)
	if len(all) > n {
		return all[:n], true, nil
	}
	return all, false, nil
}

// RecordUnmatched keeps a bounce that matched no answer.
func (s *Store) RecordUnmatched(ctx context.Context, rep outbox.Report, raw []byte) error {
	if err := s.open(); err != nil {
		return err
	}
	if rep.ID == "" {
		return fmt.Errorf("redisstore: record unmatched: %w: report without an id", outbox.ErrInvalid)
	}
	if len(raw) > outbox.MaxRawReport {
		raw = raw[:outbox.MaxRawReport]
	}
	if len(raw) > 0 {
		rep.RawSize = int64(len(raw))
	}
	j, err := json.Marshal(outbox.Unmatched{Report: rep})
	if err != nil {
		return fmt.Errorf("redisstore: record unmatched: %w", err)
	}
	return runCode(ctx, s.c, "record unmatched", rep.ID, scriptRecordUnmatched,
		[]string{s.k.unmatched(), s.k.unmatchedRec(), s.k.unmatchedRaw()},
		[]any{rep.ID, member(rep.ReceivedAt, rep.ID), j, raw})
}

// ListUnmatched lists unmatched bounces, newest first.
func (s *Store) ListUnmatched(ctx context.Context, cursor string, limit int) ([]outbox.Unmatched, string, error) {
	if err := s.open(); err != nil {
		return nil, "", err
	}
	hi := "+"
	if cursor != "" {
		m, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		hi = "(" + m
	}
	limit = pageLimit(limit)
	members, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k.unmatched(), ByLex: true, Rev: true, Start: hi, Stop: "-", Count: int64(limit + 1)}).Result()
	if err != nil {
		return nil, "", classify("list unmatched", err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = encodeCursor(members[limit-1])
	}
	out := []outbox.Unmatched{}
	if len(members) == 0 {
		return out, "", nil
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = memberID(m)
	}
	vals, err := s.c.HMGet(ctx, s.k.unmatchedRec(), ids...).Result()
	if err != nil {
		return nil, "", classify("list unmatched", err)
	}
	for _, v := range vals {
		sv, ok := v.(string)
		if !ok {
			continue
		}
		var u outbox.Unmatched
		if err := json.NewDecoder(strings.NewReader(sv)).Decode(&u); err != nil {
			return nil, "", fmt.Errorf("redisstore: decode unmatched: %w", err)
		}
		out = append(out, u)
	}
	return out, next, nil
}

// CountUnmatched counts the unmatched bounces kept.
func (s *Store) CountUnmatched(ctx context.Context) (int, error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	n, err := s.c.ZCard(ctx, s.k.unmatched()).Result()
	if err != nil {
		return 0, classify("count unmatched", err)
	}
	return int(n), nil
}
