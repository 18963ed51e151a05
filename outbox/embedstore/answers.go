package embedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"github.com/answer-relay/answer-relay/outbox"
)

const (
	// chunkSize is the largest value one body chunk takes.
	chunkSize = 256 << 10
	// batchChunks chunks are written per transaction, so at most about
	// 1 MB of a body is in memory at once.
	batchChunks = 4
)

// Accept stores a new answer with its body. A body up to 1 MB is written
// with the record in one transaction; a larger one is written 1 MB per
// transaction under a fresh body key first, and the record that names the
// key is committed last, so a failure leaves no visible answer (the chunks
// written so far are removed at once, or when the file is next opened).
// On success a.Size is the number of body bytes stored and a.Version 1.
func (s *Store) Accept(ctx context.Context, a *outbox.Answer, body io.Reader) error {
	if a == nil || a.ID == "" || len(a.Recipients) == 0 {
		return fmt.Errorf("%w: answer needs an id and a recipient", outbox.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bodyKey := []byte(a.ID + "." + token())
	var size int64
	var n uint32 // chunks written
	staged := false
	batch := make([][]byte, 0, batchChunks)
	eof := false
	for !eof {
		// Read one batch of chunks; each chunk keeps its own buffer because
		// bbolt holds on to values until the transaction ends.
		batch = batch[:0]
		for len(batch) < batchChunks && !eof {
			buf := make([]byte, chunkSize)
			m, err := io.ReadFull(body, buf)
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				eof = true
			case err != nil:
				s.dropBody(staged, bodyKey)
				return fmt.Errorf("embedstore: reading body of %s: %w", a.ID, err)
			}
			if m > 0 {
				batch = append(batch, buf[:m])
				size += int64(m)
			}
		}
		if err := ctx.Err(); err != nil {
			s.dropBody(staged, bodyKey)
			return err
		}
		writeChunks := func(tx *bolt.Tx) error {
			b, err := tx.Bucket(bktBodies).CreateBucketIfNotExists(bodyKey)
			if err != nil {
				return err
			}
			for i, c := range batch {
				if err := b.Put(chunkKey(n+uint32(i)), c); err != nil {
					return err
				}
			}
			return nil
		}
		if !eof {
			if err := s.db.Update(writeChunks); err != nil {
				s.dropBody(staged, bodyKey)
				return wrap(err)
			}
			staged = true
			n += uint32(len(batch))
			continue
		}
		// The last batch goes with the record.
		rec := a.Clone()
		rec.Size = size
		err := s.update(ctx, func(tx *bolt.Tx) error {
			if tx.Bucket(bktAnswers).Get([]byte(a.ID)) != nil || tx.Bucket(bktTombs).Get([]byte(a.ID)) != nil {
				return fmt.Errorf("%w: %s", outbox.ErrExists, a.ID)
			}
			if err := writeChunks(tx); err != nil {
				return err
			}
			if err := tx.Bucket(bktBodyRefs).Put([]byte(a.ID), bodyKey); err != nil {
				return err
			}
			return s.put(tx, nil, rec)
		})
		if err != nil {
			s.dropBody(staged, bodyKey)
			return err
		}
		a.Size, a.Version = rec.Size, rec.Version
	}
	return nil
}

// dropBody removes the chunks of a failed Accept, if any were committed. A
// failure here is left to the sweep at the next Open.
func (s *Store) dropBody(staged bool, bodyKey []byte) {
	if !staged {
		return
	}
	_ = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bktBodies).DeleteBucket(bodyKey)
	})
}

// Body streams the stored message of an answer, reading one chunk per
// short read transaction so no transaction stays open while the caller
// reads.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	var key []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if _, err := loadAnswer(tx, id); err != nil {
			return err
		}
		key = append([]byte(nil), tx.Bucket(bktBodyRefs).Get([]byte(id))...)
		if len(key) == 0 {
			return fmt.Errorf("%w: body of %s", outbox.ErrNotFound, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &bodyReader{s: s, id: id, key: key}, nil
}

type bodyReader struct {
	s     *Store
	id    string
	key   []byte
	next  uint32 // next chunk
	chunk []byte // the current chunk's buffer
	buf   []byte // its unread part
	err   error
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		err := r.s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bktBodies).Bucket(r.key)
			if b == nil {
				return fmt.Errorf("%w: body of %s was deleted while being read", outbox.ErrExpired, r.id)
			}
			c := b.Get(chunkKey(r.next))
			if c == nil {
				return io.EOF
			}
			r.chunk = append(r.chunk[:0], c...)
			return nil
		})
		if err != nil {
			if err != io.EOF {
				err = wrap(err)
			}
			r.err = err
			return 0, err
		}
		r.buf = r.chunk
		r.next++
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Close ends the stream; later reads fail.
func (r *bodyReader) Close() error {
	r.buf, r.chunk, r.err = nil, nil, errors.New("embedstore: read of a closed body")
	return nil
}

// Get returns the answer with the given id.
func (s *Store) Get(ctx context.Context, id string) (*outbox.Answer, error) {
	var a *outbox.Answer
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		a, err = loadAnswer(tx, id)
		return err
	})
	return a, err
}

// Lookup returns the newest answer (by id) whose reference under key is
// value.
func (s *Store) Lookup(ctx context.Context, key outbox.LookupKey, value string) (*outbox.Answer, error) {
	switch key {
	case outbox.ByAnswerRef, outbox.ByMessageID, outbox.ByEnvelopeID:
	default:
		return nil, fmt.Errorf("%w: lookup key %q", outbox.ErrInvalid, key)
	}
	if value == "" {
		return nil, fmt.Errorf("%w: empty %s", outbox.ErrNotFound, key)
	}
	var a *outbox.Answer
	err := s.view(ctx, func(tx *bolt.Tx) error {
		prefix := append(join(string(key), value), 0)
		var id string
		reverseScan(tx.Bucket(bktRefs), prefix, nil, func(k []byte) bool {
			id = lastPart(k)
			return false
		})
		if id == "" {
			return fmt.Errorf("%w: %s %q", outbox.ErrNotFound, key, value)
		}
		var err error
		a, err = loadAnswer(tx, id)
		return err
	})
	return a, err
}

// reverseScan calls fn with the keys of b that start with prefix and sort
// before prefix+before (all of them for before nil), from the last down,
// while fn returns true.
func reverseScan(b *bolt.Bucket, prefix, before []byte, fn func(k []byte) bool) {
	c := b.Cursor()
	var k []byte
	if before == nil && len(prefix) == 0 {
		k, _ = c.Last()
	} else {
		seek := append(append([]byte(nil), prefix...), before...)
		if before == nil {
			seek = append(seek, 0xff)
		}
		k, _ = c.Seek(seek)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
		if !fn(k) {
			return
		}
	}
}

// Paging limits of outbox.Filter.
const (
	defaultLimit = 50
	maxLimit     = 500
)

func pageLimit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// List returns answers matching f, newest (highest id) first. It walks the
// status or ticket index when f names one, else every answer, and checks
// the other conditions on the record. The cursor is the last id returned.
func (s *Store) List(ctx context.Context, f outbox.Filter) (outbox.Page, error) {
	limit := pageLimit(f.Limit)
	var before []byte
	if f.Cursor != "" {
		before = []byte(f.Cursor)
	}
	var page outbox.Page
	err := s.view(ctx, func(tx *bolt.Tx) error {
		answers := tx.Bucket(bktAnswers)
		bucket, prefix := answers, []byte(nil)
		switch {
		case f.Status != "":
			bucket, prefix = tx.Bucket(bktByStatus), append([]byte(f.Status), 0)
		case f.TicketID != "":
			bucket, prefix = tx.Bucket(bktByTicket), append([]byte(f.TicketID), 0)
		}
		var ferr error
		more := false
		reverseScan(bucket, prefix, before, func(k []byte) bool {
			id := string(k)
			if prefix != nil {
				id = lastPart(k)
			}
			var a outbox.Answer
			if ferr = json.Unmarshal(answers.Get([]byte(id)), &a); ferr != nil {
				ferr = fmt.Errorf("embedstore: answer %s: %w", id, ferr)
				return false
			}
			if !matches(&a, f) {
				return true
			}
			if len(page.Answers) == limit {
				more = true
				return false
			}
			page.Answers = append(page.Answers, &a)
			return true
		})
		if ferr != nil {
			return ferr
		}
		if more {
			page.Next = page.Answers[len(page.Answers)-1].ID
		}
		return nil
	})
	return page, err
}

func matches(a *outbox.Answer, f outbox.Filter) bool {
	return (f.Status == "" || a.Status == f.Status) &&
		(f.TicketID == "" || a.TicketID == f.TicketID) &&
		(f.AcceptedFrom.IsZero() || !a.AcceptedAt.Before(f.AcceptedFrom)) &&
		(f.AcceptedTo.IsZero() || a.AcceptedAt.Before(f.AcceptedTo))
}
