//go:build linux

package faults

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

// TestRelayKilledUnderLoad is case 1: the relay is SIGKILLed every few
// seconds while a helpdesk sends answers, and started again at once on the
// same configuration. Nothing accepted is lost; an answer is sent twice only
// when the kill fell between the upstream's 250 and the relay recording it,
// so duplicates stay within one per worker per kill.
func TestRelayKilledUnderLoad(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		killUnderLoad(t, redistest.Start(t, redistest.WithAOF()).URL())
	})
	t.Run("embedded", func(t *testing.T) { killUnderLoad(t, "") })
}

func killUnderLoad(t *testing.T, redisURL string) {
	sk := startSink(t)
	const workers = 4
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: redisURL, Workers: workers, LeaseTTL: 3 * time.Second})

	n := scaled(1500, 10000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			sleepCtx(ctx, time.Duration(2000+rand.IntN(2000))*time.Millisecond)
			if ctx.Err() != nil {
				return
			}
			rp.kill()
			if err := rp.launch(); err != nil {
				t.Error(err)
				cancel()
				return
			}
		}
	})
	res := drive(ctx, t, loadSpec{Addrs: []string{rp.SMTP}, Answers: n, Sessions: 8, RejectEvery: 50, Rate: scaled(100, 200), Within: 10 * time.Minute})
	cancel()
	wg.Wait()

	l := account(t, res, sk, []*relayProc{rp}, 2*time.Minute)
	l.check(t, []*relayProc{rp})
	store := "redis"
	if redisURL == "" {
		store = "embedded"
	}
	figures(t, "store", store, "answers_sent", n, "accepted", l.Accepted, "elapsed", res.Elapsed.Round(time.Second),
		"kills", rp.kills, "at_sink", l.AtSink, "not_delivered", l.NotDelivered, "lost", l.Lost,
		"duplicates", l.Duplicates, "dup_pct", pct(l.Duplicates, l.Accepted), "unacked_resent", l.Unacked,
		"deferred_4xx", res.Deferred, "conn_errors", res.ConnErrors, "unsent", res.Unsent, "peak_rss_kb", rp.peakHWM.Load())
	if res.Unsent > 0 {
		t.Errorf("%d answers never accepted within the run's time", res.Unsent)
	}
	if l.Duplicates > rp.kills*workers {
		t.Errorf("%d duplicates after %d kills of %d workers: more than one per worker per kill", l.Duplicates, rp.kills, workers)
	}
	// The bound of 0.1% holds on Redis, whose commit after the
	// upstream's 250 takes well under a millisecond. The embedded store
	// commits with two fsyncs after a batch delay, so a kill catches a
	// worker between the 250 and the commit more often: 0.08% to 0.16%
	// at this pace, depending on the machine's load (docs/reliability.md).
	// There only the bound above is asserted.
	if *full && redisURL != "" && l.Duplicates*1000 > l.Accepted {
		t.Errorf("duplicates %d of %d: over 0.1%%", l.Duplicates, l.Accepted)
	}
}

// TestRedisRestartedUnderLoad is case 2: Redis (with an append-only file)
// is killed mid-run and started again. While it is down the relay answers
// 451 and never 250; it recovers by itself, and nothing it accepted before
// or after is lost.
func TestRedisRestartedUnderLoad(t *testing.T) {
	rs := redistest.Start(t, redistest.WithAOF())
	sk := startSink(t)
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: rs.URL()})

	n := scaled(1500, 10000)
	outages := scaled(1, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type window struct{ from, to time.Time }
	var (
		mu      sync.Mutex
		windows []window
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for range outages {
			// Let the load reach its pace, then take Redis away.
			sleepCtx(ctx, 3*time.Second)
			if ctx.Err() != nil {
				return
			}
			rs.Kill()
			from := time.Now()
			sleepCtx(ctx, 3*time.Second)
			to := time.Now()
			rs.Restart()
			mu.Lock()
			windows = append(windows, window{from, to})
			mu.Unlock()
		}
	}()
	res := drive(ctx, t, loadSpec{Addrs: []string{rp.SMTP}, Answers: n, Sessions: 8, RejectEvery: 50, PerConn: 1000, Rate: scaled(100, 200), Within: 10 * time.Minute})
	<-done
	cancel()

	// Never 250 while Redis was down: no answer whose end of data was
	// sent after the kill was accepted before the restart.
	wrong := 0
	for id, a := range res.Accepted {
		for _, w := range windows {
			if a.Dot.After(w.from) && a.Reply.Before(w.to) {
				wrong++
				t.Errorf("answer %s got 250 while Redis was down (data ended %s after the kill)", id, a.Dot.Sub(w.from))
			}
		}
	}
	if !rp.running() {
		t.Fatalf("the relay exited while Redis was down: %s", rp.logTail(20))
	}
	l := account(t, res, sk, []*relayProc{rp}, 2*time.Minute)
	l.check(t, []*relayProc{rp})
	figures(t, "answers_sent", n, "accepted", l.Accepted, "elapsed", res.Elapsed.Round(time.Second),
		"redis_kills", len(windows), "outage_each", "3s", "refused_4xx", res.Deferred, "conn_errors", res.ConnErrors,
		"250_while_down", wrong, "at_sink", l.AtSink, "not_delivered", l.NotDelivered, "lost", l.Lost,
		"duplicates", l.Duplicates, "unsent", res.Unsent, "relay_restarts", rp.starts-1, "peak_rss_kb", rp.peakHWM.Load())
	if res.Deferred == 0 {
		t.Errorf("no 451 during %d Redis outages: the load did not meet the outage", len(windows))
	}
	if res.Unsent > 0 {
		t.Errorf("%d answers never accepted: the relay did not recover", res.Unsent)
	}
}

func pct(a, b int) string {
	if b == 0 {
		return "0%"
	}
	return strconvF(100*float64(a)/float64(b)) + "%"
}
