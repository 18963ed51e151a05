package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox"
)

// Defaults of Options.
const (
	// DefaultPartitions is the number of partitions when Options.Partitions
	// is zero. It can never change for a keyspace that holds data: an
	// answer's partition is derived from its id and the count.
	DefaultPartitions = 16
	// DefaultPrefix starts every key when Options.Prefix is empty.
	DefaultPrefix = "answer-relay"
	// DefaultTombstoneTTL is how long Get reports ErrExpired for an expired
	// answer before it reports ErrNotFound.
	DefaultTombstoneTTL = 90 * 24 * time.Hour
)

const (
	// chunkSize is the unit in which bodies are written and read. A body
	// up to this size is written by the accept script itself.
	chunkSize = 256 << 10
	// tmpBodyTTL bounds how long a body streamed in by an Accept that never
	// finished survives; each chunk written renews it.
	tmpBodyTTL = 15 * time.Minute
	// casRetries bounds the re-read and re-apply rounds of a transition that
	// lost a compare-and-set race.
	casRetries = 16
	// candidateSlack is how many more candidates than it needs Lease and
	// ClaimEvents peek at per partition, so concurrent callers racing for
	// the oldest ones still fill their batch in one round.
	candidateSlack = 16
	// defaultPage and maxPage bound List pages (outbox.Filter.Limit).
	defaultPage, maxPage = 50, 500
)

// Options configures a Store.
type Options struct {
	// Clock tells the time; time.Now when nil.
	Clock outbox.Clock
	// Partitions is the number of partitions of the keyspace (SPEC
	// section 7); DefaultPartitions when zero. Every replica sharing a
	// Redis must use the same value.
	Partitions int
	// Prefix starts every key; DefaultPrefix when empty. It must not
	// contain "{" or "}". Two stores with different prefixes share a Redis
	// without seeing each other.
	Prefix string
	// TombstoneTTL is how long an expired answer's tombstone lasts;
	// DefaultTombstoneTTL when zero.
	TombstoneTTL time.Duration
}

// Store is an outbox.Store kept in Redis (single node, Sentinel or Cluster).
// It is safe for concurrent use, by any number of relay replicas at once.
type Store struct {
	c      redis.UniversalClient
	k      keys
	now    outbox.Clock
	tombTT time.Duration
	closed atomic.Bool
}

var _ outbox.Store = (*Store)(nil)

// New returns a Store on client. The client stays the caller's: Close does
// not close it.
func New(client redis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, fmt.Errorf("redisstore: %w: nil client", outbox.ErrInvalid)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Partitions == 0 {
		opts.Partitions = DefaultPartitions
	}
	if opts.Partitions < 1 || opts.Partitions > 1000 {
		return nil, fmt.Errorf("redisstore: %w: partitions %d, want 1 to 1000", outbox.ErrInvalid, opts.Partitions)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !validPrefix(opts.Prefix) {
		return nil, fmt.Errorf("redisstore: %w: key prefix %q contains a brace", outbox.ErrInvalid, opts.Prefix)
	}
	if opts.TombstoneTTL <= 0 {
		opts.TombstoneTTL = DefaultTombstoneTTL
	}
	return &Store{c: client, k: newKeys(opts.Prefix, opts.Partitions), now: opts.Clock, tombTT: opts.TombstoneTTL}, nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.open(); err != nil {
		return err
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close marks the store closed: every later call fails with
// outbox.ErrUnavailable. It does not close the client, which the caller
// owns.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

func (s *Store) open() error {
	if s.closed.Load() {
		return fmt.Errorf("redisstore: %w: store closed", outbox.ErrUnavailable)
	}
	return nil
}

// unavailable wraps a failure to reach Redis, or a refusal of Redis to
// serve (LOADING, READONLY, CLUSTERDOWN, ...), in outbox.ErrUnavailable.
func unavailable(op string, err error) error {
	return fmt.Errorf("redisstore: %s: %w: %w", op, outbox.ErrUnavailable, err)
}

// classify wraps err as unavailable unless it is an error reply that means a
// bug (a wrong type, a script error) rather than an unreachable store.
func classify(op string, err error) error {
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		if strings.HasPrefix(msg, "ERR") || strings.HasPrefix(msg, "WRONGTYPE") {
			return fmt.Errorf("redisstore: %s: %w", op, err)
		}
	}
	return unavailable(op, err)
}

// codeErr maps the status code a script returned to an error.
func codeErr(op, id, code string) error {
	switch code {
	case "OK":
		return nil
	case "NOTFOUND":
		return fmt.Errorf("redisstore: %s %s: %w", op, id, outbox.ErrNotFound)
	case "EXPIRED":
		return fmt.Errorf("redisstore: %s %s: %w", op, id, outbox.ErrExpired)
	case "EXISTS":
		return fmt.Errorf("redisstore: %s %s: %w", op, id, outbox.ErrExists)
	case "LEASELOST":
		return fmt.Errorf("redisstore: %s %s: %w", op, id, outbox.ErrLeaseLost)
	case "DUPLICATE":
		return fmt.Errorf("redisstore: %s %s: %w", op, id, outbox.ErrDuplicate)
	case "NOBODY":
		return fmt.Errorf("redisstore: %s %s: %w: the streamed body expired before it was stored", op, id, outbox.ErrUnavailable)
	}
	return fmt.Errorf("redisstore: %s %s: unexpected script reply %q", op, id, code)
}

// errConflict is the CONFLICT code of a script: the record changed since it
// was read.
var errConflict = errors.New("redisstore: version conflict")

func runCode(ctx context.Context, c redis.UniversalClient, op, id string, sc *redis.Script, keys []string, args []any) error {
	code, err := sc.Run(ctx, c, keys, args...).Text()
	if err != nil {
		return classify(op, err)
	}
	if code == "CONFLICT" {
		return errConflict
	}
	return codeErr(op, id, code)
}

// us is t in Unix microseconds, the unit of every sorted-set score.
func us(t time.Time) int64 { return t.UnixMicro() }

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

// token returns a random token for a lease, a claim, a write or a temporary
// key.
func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Get returns the answer with the given id.
func (s *Store) Get(ctx context.Context, id string) (*outbox.Answer, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, fmt.Errorf("redisstore: get: %w", outbox.ErrNotFound)
	}
	var rec *redis.StringCmd
	var tomb *redis.IntCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		rec = p.HGet(ctx, s.k.record(id), "j")
		tomb = p.Exists(ctx, s.k.tomb(id))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, classify("get", err)
	}
	j, err := rec.Bytes()
	if errors.Is(err, redis.Nil) {
		if tomb.Val() == 1 {
			return nil, fmt.Errorf("redisstore: get %s: %w", id, outbox.ErrExpired)
		}
		return nil, fmt.Errorf("redisstore: get %s: %w", id, outbox.ErrNotFound)
	}
	return decodeAnswer(j)
}

func decodeAnswer(j []byte) (*outbox.Answer, error) {
	var a outbox.Answer
	if err := json.Unmarshal(j, &a); err != nil {
		return nil, fmt.Errorf("redisstore: decode answer: %w", err)
	}
	return &a, nil
}

// Accept stores a new answer with its body and its answer.scheduled event.
// The body goes into a temporary key with a TTL, which the accept script
// renames while it creates the record, so a crash or an error midway leaves
// nothing that lasts. A body up to chunkSize is written in the same pipeline
// as the script: one round trip (a body passed to the script as an argument
// costs Redis more CPU than the SET and RENAME). A larger one is streamed
// in first, chunk by chunk.
func (s *Store) Accept(ctx context.Context, a *outbox.Answer, body io.Reader) error {
	if err := s.open(); err != nil {
		return err
	}
	if a == nil || a.ID == "" || len(a.Recipients) == 0 {
		return fmt.Errorf("redisstore: accept: %w: an answer needs an id and a recipient", outbox.ErrInvalid)
	}
	if body == nil {
		body = strings.NewReader("")
	}
	rec := copyAnswer(a)
	rec.Version = 1
	now := s.now()

	bp := chunks.Get().(*[]byte)
	defer chunks.Put(bp)
	buf := *bp
	n, err := io.ReadFull(body, buf)
	inline := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !inline {
		return fmt.Errorf("redisstore: accept %s: read body: %w", a.ID, err)
	}
	rec.Size = int64(n)
	tmp := s.k.tmpBody(a.ID, token())
	if !inline {
		size, err := s.streamBody(ctx, tmp, buf, body)
		if err != nil {
			s.dropTemp(ctx, tmp)
			return fmt.Errorf("redisstore: accept %s: %w", a.ID, err)
		}
		rec.Size = size
	}
	keys := append(s.k.answerKeys(a.ID, "", rec.Status), s.k.body(a.ID), tmp)
	keys = append(keys, s.k.indexKeys(rec)...)
	args, err := s.commonArgs(nil, rec, rec.Events, now)
	if err != nil {
		return err
	}
	var cmd *redis.Cmd
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if inline {
			p.Set(ctx, tmp, buf[:n], tmpBodyTTL)
		}
		cmd = scriptAccept.EvalSha(ctx, p, keys, args...)
		return nil
	})
	if err := cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		// The script cache is empty (a restart, a failover): the script did
		// not run, the body is in place.
		cmd = scriptAccept.Eval(ctx, s.c, keys, args...)
	}
	code, err := cmd.Text()
	if err != nil {
		err = classify("accept", err)
	} else {
		err = codeErr("accept", a.ID, code)
	}
	if err != nil && (!inline || !errors.Is(err, outbox.ErrUnavailable)) {
		// A body written in the pipeline is left to its TTL when Redis is
		// unreachable: retrying to delete it would only add failed dials.
		s.dropTemp(ctx, tmp)
	}
	return err
}

// chunks recycles the chunk buffers of Accept, so accepting an answer does
// not allocate (and zero) a chunk every time.
var chunks = sync.Pool{New: func() any {
	b := make([]byte, chunkSize)
	return &b
}}

// copyAnswer returns a copy of a that the state-machine methods of
// outbox.Answer may change without touching a: every slice they change an
// element of or append to is copied. Elements they never change once
// written (attempts, reports, events, headers) are shared. It is Clone
// without a JSON round trip, which was a seventh of the CPU of the hot path.
func copyAnswer(a *outbox.Answer) *outbox.Answer {
	c := *a
	c.Recipients = slices.Clone(a.Recipients)
	c.Attempts = slices.Clip(a.Attempts)
	c.Reports = slices.Clip(a.Reports)
	c.Events = slices.Clip(a.Events)
	c.Headers = slices.Clip(a.Headers)
	return &c
}

// streamBody writes buf (the first chunk, full) and the rest of r to the
// temporary key tmp, renewing its TTL with every chunk, and returns the body
// size. Chunks are written with SETRANGE at
// their offset, so a chunk the client sends again after a lost reply lands
// where it belongs.
func (s *Store) streamBody(ctx context.Context, tmp string, buf []byte, r io.Reader) (int64, error) {
	chunk, off := buf, int64(0)
	for {
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.SetRange(ctx, tmp, off, string(chunk))
			p.PExpire(ctx, tmp, tmpBodyTTL)
			return nil
		})
		if err != nil {
			return off, classify("write body", err)
		}
		off += int64(len(chunk))
		n, rerr := io.ReadFull(r, buf[:cap(buf)])
		chunk = buf[:n]
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return off, nil
		case errors.Is(rerr, io.ErrUnexpectedEOF):
			last := chunk
			_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.SetRange(ctx, tmp, off, string(last))
				p.PExpire(ctx, tmp, tmpBodyTTL)
				return nil
			})
			if err != nil {
				return off, classify("write body", err)
			}
			return off + int64(len(last)), nil
		default:
			return off, fmt.Errorf("read body: %w", rerr)
		}
	}
}

// dropTemp deletes a temporary body, even when ctx is cancelled; if Redis is
// unreachable its TTL removes it later.
func (s *Store) dropTemp(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = s.c.Del(ctx, tmp).Err()
}

// commonArgs builds the common ARGV block of the answer transition scripts
// (lua/prelude.lua) for the write of next over cur (nil on accept).
func (s *Store) commonArgs(cur, next *outbox.Answer, events []outbox.Event, now time.Time) ([]any, error) {
	j, err := json.Marshal(next)
	if err != nil {
		return nil, fmt.Errorf("redisstore: encode answer: %w", err)
	}
	var curVersion int64
	if cur != nil {
		curVersion = cur.Version
	}
	due := next.NextAttemptAt
	if due.IsZero() {
		due = now
	}
	args := []any{
		next.ID, curVersion, next.Version, token(), j,
		queueChange(cur, next), awaitChange(cur, next), us(next.QueuedAt), member(next.AcceptedAt, next.ID),
		us(due), us(now), len(events),
	}
	for _, e := range events {
		ej, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("redisstore: encode event: %w", err)
		}
		args = append(args, strconv.FormatInt(us(e.At), 10)+" "+string(ej))
	}
	return args, nil
}

// queueChange is the queue change of the write of next over cur (nil on
// accept), ARGV 6 of lua/prelude.lua: "+" next enters the queue or its
// QueuedAt moves, "=" it stays queued at the same QueuedAt, "-" it leaves
// the queue, "" it stays out of it.
func queueChange(cur, next *outbox.Answer) string {
	was := cur != nil && cur.Queued()
	switch {
	case next.Queued() && (!was || !cur.QueuedAt.Equal(next.QueuedAt)):
		return "+"
	case next.Queued():
		return "="
	case was:
		return "-"
	}
	return ""
}

// awaitChange is the await-set change of the write of next over cur (nil
// on accept), ARGV 7 of lua/prelude.lua: "+" next enters the set or its
// QueuedAt moves, "-" it leaves the set, "" no change.
func awaitChange(cur, next *outbox.Answer) string {
	was := cur != nil && cur.Awaiting()
	switch {
	case next.Awaiting() && (!was || !cur.QueuedAt.Equal(next.QueuedAt)):
		return "+"
	case was && !next.Awaiting():
		return "-"
	}
	return ""
}

// transition is one state-machine step applied by update.
type transition struct {
	op     string
	script *redis.Script
	// apply runs the state-machine method on a (a copy of the stored
	// record) and returns its events.
	apply func(a *outbox.Answer, now time.Time) ([]outbox.Event, error)
	// keys and args are the script's own KEYS and ARGV after the common
	// blocks.
	keys []string
	args []any
}

// update applies tr to answer id: read (or start from cur), apply, and
// compare-and-set with the transition's script; on a version conflict read
// again and re-apply, a bounded number of times.
func (s *Store) update(ctx context.Context, id string, cur *outbox.Answer, tr transition) (*outbox.Answer, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	for range casRetries {
		if cur == nil {
			var err error
			if cur, err = s.Get(ctx, id); err != nil {
				return nil, err
			}
		}
		now := s.now()
		next := copyAnswer(cur)
		events, err := tr.apply(next, now)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %s %s: %w", tr.op, id, err)
		}
		next.Version = cur.Version + 1
		args, err := s.commonArgs(cur, next, events, now)
		if err != nil {
			return nil, err
		}
		keys := append(s.k.answerKeys(id, cur.Status, next.Status), tr.keys...)
		err = runCode(ctx, s.c, tr.op, id, tr.script, keys, append(args, tr.args...))
		if errors.Is(err, errConflict) {
			cur = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		return next, nil
	}
	return nil, fmt.Errorf("redisstore: %s %s: %w: the record kept changing", tr.op, id, outbox.ErrUnavailable)
}

// RecordAttempt applies Answer.ApplyAttempt under the lease and ends it.
func (s *Store) RecordAttempt(ctx context.Context, l *outbox.Lease, att outbox.Attempt) (*outbox.Answer, error) {
	if l == nil || l.Answer == nil {
		return nil, fmt.Errorf("redisstore: record attempt: %w: no lease", outbox.ErrInvalid)
	}
	return s.update(ctx, l.Answer.ID, l.Answer, transition{
		op: "record attempt", script: scriptRecordAttempt,
		apply: func(a *outbox.Answer, now time.Time) ([]outbox.Event, error) { return a.ApplyAttempt(att, now) },
		args:  []any{l.Token},
	})
}

// Release ends a lease without an attempt; the answer is due at once.
func (s *Store) Release(ctx context.Context, l *outbox.Lease) error {
	if err := s.open(); err != nil {
		return err
	}
	if l == nil || l.Answer == nil {
		return fmt.Errorf("redisstore: release: %w: no lease", outbox.ErrInvalid)
	}
	id := l.Answer.ID
	p := s.k.partition(id)
	return runCode(ctx, s.c, "release", id, scriptRelease,
		[]string{s.k.due(p), s.k.leases(p)}, []any{id, l.Token, us(s.now())})
}

// ExtendLease moves the end of a lease still held to now+ttl.
func (s *Store) ExtendLease(ctx context.Context, l *outbox.Lease, ttl time.Duration) error {
	if err := s.open(); err != nil {
		return err
	}
	if l == nil || l.Answer == nil {
		return fmt.Errorf("redisstore: extend lease: %w: no lease", outbox.ErrInvalid)
	}
	id := l.Answer.ID
	p := s.k.partition(id)
	until := s.now().Add(ttl)
	if err := runCode(ctx, s.c, "extend lease", id, scriptExtendLease,
		[]string{s.k.due(p), s.k.leases(p)}, []any{id, l.Token, us(until)}); err != nil {
		return err
	}
	l.Until = until
	return nil
}

// RecordReport applies Answer.ApplyReport and keeps the raw report.
func (s *Store) RecordReport(ctx context.Context, id string, rep outbox.Report, raw []byte) (*outbox.Answer, error) {
	if len(raw) > outbox.MaxRawReport {
		raw = raw[:outbox.MaxRawReport]
	}
	if len(raw) > 0 {
		rep.RawSize = int64(len(raw))
	}
	return s.update(ctx, id, nil, transition{
		op: "record report", script: scriptRecordReport,
		apply: func(a *outbox.Answer, now time.Time) ([]outbox.Event, error) { return a.ApplyReport(rep, now) },
		keys:  []string{s.k.raw(id)},
		args:  []any{rep.ID, raw},
	})
}

// ReportRaw returns the raw message of a report of an answer.
func (s *Store) ReportRaw(ctx context.Context, answerID, reportID string) ([]byte, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	raw, err := s.c.HGet(ctx, s.k.raw(answerID), reportID).Bytes()
	if errors.Is(err, redis.Nil) {
		if _, gerr := s.Get(ctx, answerID); gerr != nil {
			return nil, gerr
		}
		return nil, fmt.Errorf("redisstore: report %s of %s: %w", reportID, answerID, outbox.ErrNotFound)
	}
	if err != nil {
		return nil, classify("report raw", err)
	}
	return raw, nil
}

// Resend applies Answer.Resend: the answer is due again at once.
func (s *Store) Resend(ctx context.Context, id string) (*outbox.Answer, error) {
	return s.update(ctx, id, nil, transition{
		op: "resend", script: scriptResend,
		apply: func(a *outbox.Answer, now time.Time) ([]outbox.Event, error) { return a.Resend(now) },
	})
}

// Body streams the stored message of an answer, a chunk per round trip.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	// One round trip: the size, and the first chunk, which for most
	// answers is the whole body.
	var size, exists *redis.IntCmd
	var first *redis.StringCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		size = p.StrLen(ctx, s.k.body(id))
		exists = p.Exists(ctx, s.k.body(id))
		first = p.GetRange(ctx, s.k.body(id), 0, chunkSize-1)
		return nil
	})
	if err != nil {
		return nil, classify("body", err)
	}
	if exists.Val() == 0 {
		if _, err := s.Get(ctx, id); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("redisstore: body of %s: %w", id, outbox.ErrNotFound)
	}
	buf, _ := first.Bytes()
	return &bodyReader{ctx: ctx, c: s.c, key: s.k.body(id), size: size.Val(), buf: buf, off: int64(len(buf))}, nil
}

// bodyReader reads a body with GETRANGE, one chunk at a time.
type bodyReader struct {
	ctx  context.Context
	c    redis.UniversalClient
	key  string
	size int64
	off  int64
	buf  []byte
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.off >= r.size {
			return 0, io.EOF
		}
		end := min(r.off+chunkSize, r.size) - 1
		b, err := r.c.GetRange(r.ctx, r.key, r.off, end).Bytes()
		if err != nil {
			return 0, classify("read body", err)
		}
		if len(b) == 0 {
			// The body is gone (expired under the reader).
			return 0, fmt.Errorf("redisstore: read body: %w", outbox.ErrNotFound)
		}
		r.buf = b
		r.off += int64(len(b))
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *bodyReader) Close() error { return nil }
