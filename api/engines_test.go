package api

import (
	"path/filepath"
	"testing"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
)

// engine opens a fresh, empty store of one kind.
type engine struct {
	name string
	open func(t testing.TB, clock outbox.Clock) outbox.Store
}

var engines = []engine{
	{"embedded", func(t testing.TB, clock outbox.Clock) outbox.Store {
		s, err := embedstore.Open(filepath.Join(t.TempDir(), "outbox.db"), embedstore.Options{Clock: clock})
		if err != nil {
			t.Fatalf("embedstore.Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
	{"redis", func(t testing.TB, clock outbox.Clock) outbox.Store {
		srv := redistest.Start(t)
		s, err := redisstore.New(srv.Client(), redisstore.Options{Clock: clock})
		if err != nil {
			t.Fatalf("redisstore.New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
}
