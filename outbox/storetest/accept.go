package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

func testAccept(t *testing.T, open Opener) {
	t.Run("round trip", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.newAnswer(spec{rcpts: []string{rcptA, rcptB}})
		want := a.Clone()
		body := defaultBody(a.ID)
		if err := h.s.Accept(h.ctx, a, bytes.NewReader(body)); err != nil {
			t.Fatalf("Accept: %v", err)
		}
		got := h.get(a.ID)
		want.Size = int64(len(body))
		if !sameRecord(got, want) {
			t.Errorf("Get after Accept:\n got %s\nwant %s", mustJSON(got), mustJSON(want))
		}
		if got.Status != outbox.StatusScheduled || len(got.Events) != 1 || got.Events[0].Type != outbox.EventScheduled {
			t.Errorf("accepted answer: status %s events %v, want scheduled [answer.scheduled]", got.Status, eventTypes(got.Events))
		}
		rc, err := h.s.Body(h.ctx, a.ID)
		if err != nil {
			t.Fatalf("Body: %v", err)
		}
		if b := readAll(t, rc); !bytes.Equal(b, body) {
			t.Errorf("Body = %q, want %q", b, body)
		}
		if n := h.queueLen(); n != 1 {
			t.Errorf("queue length = %d, want 1: an accepted answer is due", n)
		}
	})

	t.Run("empty body", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.accept(spec{body: []byte{}})
		rc, err := h.s.Body(h.ctx, a.ID)
		if err != nil {
			t.Fatalf("Body: %v", err)
		}
		if b := readAll(t, rc); len(b) != 0 {
			t.Errorf("Body = %d bytes, want 0", len(b))
		}
	})

	t.Run("20 MB body streamed", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.newAnswer(spec{})
		const size = 20 << 20
		old := debug.SetGCPercent(10) // so the heap reflects live data
		defer debug.SetGCPercent(old)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base, peak := ms.HeapAlloc, ms.HeapAlloc
		src := &patternReader{n: size, every: 1 << 20, sample: func() {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}}
		if err := h.s.Accept(h.ctx, a, src); err != nil {
			t.Fatalf("Accept: %v", err)
		}
		growth := int64(peak) - int64(base)
		t.Logf("heap growth while accepting a %d MB body: %.1f MB", size>>20, float64(growth)/(1<<20))
		if growth > size/2 {
			t.Errorf("heap grew by %d bytes while accepting a %d byte body: the body is not streamed", growth, size)
		}
		if got := h.get(a.ID); got.Size != size {
			t.Errorf("Size = %d, want %d", got.Size, size)
		}
		rc, err := h.s.Body(h.ctx, a.ID)
		if err != nil {
			t.Fatalf("Body: %v", err)
		}
		defer rc.Close()
		sum := sha256.New()
		n, err := io.Copy(sum, rc)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		want := sha256.New()
		io.Copy(want, &patternReader{n: size})
		if n != size || !bytes.Equal(sum.Sum(nil), want.Sum(nil)) {
			t.Errorf("body read back: %d bytes, digest differs: %v", n, !bytes.Equal(sum.Sum(nil), want.Sum(nil)))
		}
	})

	t.Run("failing body leaves nothing", func(t *testing.T) {
		h := newHarness(t, open)
		a := h.newAnswer(spec{})
		boom := errors.New("client went away")
		src := io.MultiReader(&patternReader{n: 3 << 20}, errReader{boom})
		if err := h.s.Accept(h.ctx, a.Clone(), src); err == nil {
			t.Fatal("Accept with a failing body: nil error")
		}
		_, err := h.s.Get(h.ctx, a.ID)
		wantErr(t, "Get after failed Accept", err, outbox.ErrNotFound)
		_, err = h.s.Body(h.ctx, a.ID)
		wantErr(t, "Body after failed Accept", err, outbox.ErrNotFound)
		if n := h.queueLen(); n != 0 {
			t.Errorf("queue length = %d after failed Accept, want 0", n)
		}
		p, err := h.s.List(h.ctx, outbox.Filter{})
		if err != nil || len(p.Answers) != 0 {
			t.Errorf("List after failed Accept = %v, %v; want empty", ids(p.Answers), err)
		}
		cs, err := h.s.ClaimEvents(h.ctx, "c", 10, time.Minute)
		if err != nil || len(cs) != 0 {
			t.Errorf("ClaimEvents after failed Accept = %d claims, %v; want none", len(cs), err)
		}
		// The same id can be accepted afterwards with a new body.
		body := defaultBody(a.ID)
		if err := h.s.Accept(h.ctx, a, bytes.NewReader(body)); err != nil {
			t.Fatalf("Accept again: %v", err)
		}
		rc, err := h.s.Body(h.ctx, a.ID)
		if err != nil {
			t.Fatalf("Body: %v", err)
		}
		if b := readAll(t, rc); !bytes.Equal(b, body) {
			t.Errorf("Body = %d bytes, want the %d of the second Accept", len(b), len(body))
		}
	})

	t.Run("existing id", func(t *testing.T) {
		h := newHarness(t, open)
		first := h.accept(spec{})
		dup := h.newAnswer(spec{id: first.ID, rcpts: []string{rcptB}})
		err := h.s.Accept(h.ctx, dup, bytes.NewReader([]byte("other body")))
		wantErr(t, "Accept of an existing id", err, outbox.ErrExists)
		h.unchanged(first)
		rc, err := h.s.Body(h.ctx, first.ID)
		if err != nil {
			t.Fatalf("Body: %v", err)
		}
		if b := readAll(t, rc); !bytes.Equal(b, defaultBody(first.ID)) {
			t.Errorf("Body after duplicate Accept = %q, want the first body", b)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			a    *outbox.Answer
		}{
			{"no id", &outbox.Answer{Recipients: []outbox.Recipient{{Address: rcptA, Status: outbox.StatusScheduled}}}},
			{"no recipient", &outbox.Answer{ID: outbox.NewID(Start)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, open)
				err := h.s.Accept(h.ctx, tc.a, bytes.NewReader([]byte("x")))
				wantErr(t, "Accept", err, outbox.ErrInvalid)
				if n := h.queueLen(); n != 0 {
					t.Errorf("queue length = %d, want 0", n)
				}
			})
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		h := newHarness(t, open)
		_, err := h.s.Body(h.ctx, outbox.NewID(Start))
		wantErr(t, "Body of an unknown id", err, outbox.ErrNotFound)
	})
}

// patternReader yields n bytes of a fixed pattern without holding them,
// calling sample (if set) every `every` bytes.
type patternReader struct {
	n, off, every int64
	next          int64
	sample        func()
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if r.sample != nil && r.off >= r.next {
		r.sample()
		r.next += r.every
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		o := r.off + int64(i)
		p[i] = byte('a' + (o*7+o/1021)%26)
		if o%78 == 77 {
			p[i] = '\n'
		}
	}
	r.off += int64(len(p))
	if r.off >= r.n && r.sample != nil {
		r.sample()
	}
	return len(p), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
