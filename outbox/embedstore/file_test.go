package embedstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/storetest"
)

// TestReopen checks that what one Store wrote is there after the file is
// closed and opened again, and that the leftovers of an Accept that died
// half-way are removed on Open.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Start)
	path := filepath.Join(t.TempDir(), "sub", "outbox.db")
	s, err := Open(path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := outbox.NewAnswer(outbox.NewID(clock.Now()), "agent@helpdesk.example", []string{"ann@customer.example"}, clock.Now())
	a.SetReferences("T-1", "R-1")
	body := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: several chunks and transactions
	if err := s.Accept(ctx, a, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, "w1", 1, time.Hour)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %d, %v", len(ls), err)
	}
	// A body whose Accept never finished, as a crash would leave it.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bktBodies).CreateBucket([]byte("01ORPHAN.abc"))
		if err != nil {
			return err
		}
		return b.Put(chunkKey(0), []byte("half a message"))
	}); err != nil {
		t.Fatal(err)
	}
	want, _ := s.Get(ctx, a.ID)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(ctx, a.ID)
	if err != nil || got.Version != want.Version || got.Status != outbox.StatusScheduled {
		t.Fatalf("Get after reopening = %+v, %v", got, err)
	}
	rc, err := s.Body(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if !bytes.Equal(b, body) {
		t.Errorf("body after reopening: %d bytes, want %d", len(b), len(body))
	}
	if ls2, _ := s.Lease(ctx, "w2", 1, time.Hour); len(ls2) != 0 {
		t.Error("the lease did not survive reopening")
	}
	if _, err := s.RecordAttempt(ctx, ls[0], outbox.Attempt{Outcomes: []outbox.RecipientOutcome{{Address: "ann@customer.example", Kind: outbox.OutcomeSent}}}); err != nil {
		t.Errorf("RecordAttempt with the lease taken before reopening: %v", err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bktBodies).Bucket([]byte("01ORPHAN.abc")) != nil {
			t.Error("the orphaned body was not removed on Open")
		}
		return nil
	})
}

func TestOpenFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"parent is a file", filepath.Join(file, "outbox.db")},
		{"not a bbolt file", file},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, outbox.ErrUnavailable) {
				t.Errorf("Open error %v does not wrap ErrUnavailable", err)
			}
		})
	}
}

func TestCanceledAcceptLeavesNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "outbox.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a, _ := outbox.NewAnswer(outbox.NewID(time.Now()), "agent@helpdesk.example", []string{"ann@customer.example"}, time.Now())
	// The reader cancels the context after the first megabyte is staged.
	src := &cancelingReader{r: bytes.NewReader(make([]byte, 3<<20)), after: 1 << 20, cancel: cancel}
	if err := s.Accept(ctx, a, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept = %v, want context.Canceled", err)
	}
	if _, err := s.Get(context.Background(), a.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("Get after a canceled Accept = %v, want ErrNotFound", err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bktBodies).Cursor().First(); k != nil {
			t.Errorf("body %q left behind", k)
		}
		return nil
	})
}

type cancelingReader struct {
	r      io.Reader
	n      int
	after  int
	cancel func()
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if c.n > c.after {
		c.cancel()
	}
	return n, err
}
