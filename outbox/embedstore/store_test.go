package embedstore_test

import (
	"path/filepath"
	"testing"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/storetest"
)

func open(t testing.TB, clock outbox.Clock) *embedstore.Store {
	t.Helper()
	s, err := embedstore.Open(filepath.Join(t.TempDir(), "outbox.db"), embedstore.Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock outbox.Clock) outbox.Store { return open(t, clock) })
}

func BenchmarkAcceptLeaseSent(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) outbox.Store { return open(b, nil) })
}
