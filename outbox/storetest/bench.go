package storetest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// BenchWorkers is how many goroutines Bench runs.
const BenchWorkers = 8

// Bench measures the relay's hot path: accept an answer (4 KB body), lease
// it, record it sent, on BenchWorkers goroutines at once. One op is one
// answer through the three steps. open returns a fresh, empty store on the
// real clock and registers its own cleanup.
func Bench(b *testing.B, open func(b *testing.B) outbox.Store) {
	s := open(b)
	ctx := context.Background()
	body := bytes.Repeat([]byte("Thank you for your question, we are looking into it.\r\n"), 76)
	var next atomic.Int64
	var leaseMisses atomic.Int64
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range BenchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("bench-%d", w)
			for next.Add(1) <= int64(b.N) {
				now := time.Now()
				a, err := outbox.NewAnswer(outbox.NewID(now), "agent@helpdesk.example", []string{rcptA}, now)
				if err != nil {
					fail(err)
					return
				}
				a.SetReferences("T-bench", a.ID)
				if err := s.Accept(ctx, a, bytes.NewReader(body)); err != nil {
					fail(fmt.Errorf("accept: %w", err))
					return
				}
				// Another worker may have leased this answer: lease whatever
				// is due. There is always one, as every worker accepts before
				// it leases.
				var ls []*outbox.Lease
				for try := 0; len(ls) == 0; try++ {
					if try == 1000 {
						fail(fmt.Errorf("no answer due after 1000 tries"))
						return
					}
					if try > 0 {
						leaseMisses.Add(1)
					}
					if ls, err = s.Lease(ctx, owner, 1, time.Minute); err != nil {
						fail(fmt.Errorf("lease: %w", err))
						return
					}
				}
				l := ls[0]
				att := outbox.Attempt{StartedAt: time.Now(), Upstream: "bench", Outcomes: []outbox.RecipientOutcome{sent(l.Answer.Recipients[0].Address)}}
				if _, err := s.RecordAttempt(ctx, l, att); err != nil {
					fail(fmt.Errorf("record attempt: %w", err))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	b.ReportMetric(float64(leaseMisses.Load())/float64(b.N), "lease-misses/op")
}
