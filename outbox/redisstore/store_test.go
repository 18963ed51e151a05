package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/answer-relay/answer-relay/outbox/storetest"
)

// opener returns a storetest opener whose every store lives on client under
// its own key prefix, so the cases share one server and never see each
// other's keys.
func opener(client redis.UniversalClient, partitions int) func(t *testing.T, clock outbox.Clock) outbox.Store {
	var n atomic.Int64
	return func(t *testing.T, clock outbox.Clock) outbox.Store {
		s, err := redisstore.New(client, redisstore.Options{
			Clock: clock, Partitions: partitions, Prefix: fmt.Sprintf("case%d", n.Add(1)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, opener(srv.Client(), 0))
}

func TestConformanceCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	storetest.Run(t, opener(c.Client(), 0))
}

// TestConformanceOnePartition runs the suite with a single partition, where
// every answer shares one hash tag: the merge across partitions must not be
// what makes the suite pass.
func TestConformanceOnePartition(t *testing.T) {
	if testing.Short() {
		t.Skip("the suite runs on 16 partitions already")
	}
	srv := redistest.Start(t)
	storetest.Run(t, opener(srv.Client(), 1))
}

// roundTrips counts the round trips a client makes: one per command, one
// per pipeline.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkAcceptLeaseSent runs storetest.Bench (accept → lease → record
// sent on 8 goroutines) against a redis-server with appendonly yes and
// reports the Redis round trips per answer.
func BenchmarkAcceptLeaseSent(b *testing.B) {
	srv := redistest.Start(b, redistest.WithAOF())
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 16})
	b.Cleanup(func() { _ = client.Close() })
	rt := &roundTrips{}
	client.AddHook(rt)
	storetest.Bench(b, func(b *testing.B) outbox.Store {
		s, err := redisstore.New(client, redisstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		rt.n.Store(0)
		return s
	})
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
}
