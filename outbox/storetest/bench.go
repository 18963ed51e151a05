package storetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// BenchWorkers is how many goroutines Bench runs.
const BenchWorkers = 8

// BenchBatch is how many answers a Bench goroutine accepts before it
// leases, as a relay worker leases several due answers per call.
const BenchBatch = 8

// Bench measures the relay's hot path as the relay walks it: accept an
// answer (4 KB body), lease it, read its body, record it sent, on
// BenchWorkers goroutines at once. Each goroutine accepts BenchBatch
// answers, then leases up to BenchBatch at a time until it has delivered as
// many. One op is one answer through the four steps. open returns a fresh,
// empty store on the real clock and registers its own cleanup.
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
			for {
				n := 0
				for n < BenchBatch && next.Add(1) <= int64(b.N) {
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
					n++
				}
				if n == 0 {
					return
				}
				// Other workers may lease these answers: deliver whatever
				// is due until as many as were accepted are done. There is
				// always one due, as every worker accepts before it leases.
				for try := 0; n > 0; try++ {
					if try == 1000 {
						fail(fmt.Errorf("no answer due after 1000 tries"))
						return
					}
					ls, err := s.Lease(ctx, owner, n, time.Minute)
					if err != nil {
						fail(fmt.Errorf("lease: %w", err))
						return
					}
					if len(ls) == 0 {
						leaseMisses.Add(1)
						continue
					}
					for _, l := range ls {
						if err := deliver(ctx, s, l); err != nil {
							fail(err)
							return
						}
						n--
					}
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

// deliver reads a leased answer's body, as a worker sending it upstream
// would, and records it sent.
func deliver(ctx context.Context, s outbox.Store, l *outbox.Lease) error {
	r, err := s.Body(ctx, l.Answer.ID)
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	att := outbox.Attempt{StartedAt: time.Now(), Upstream: "bench", Outcomes: []outbox.RecipientOutcome{sent(l.Answer.Recipients[0].Address)}}
	if _, err := s.RecordAttempt(ctx, l, att); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}
