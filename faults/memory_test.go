//go:build linux

package faults

import (
	"context"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

// TestLargeMessagesMemory is case 9: 50 concurrent sessions send 10 MB
// answers. The relay streams bodies into the store and out to the upstream
// instead of holding them, so its peak resident set (VmHWM, sampled from
// /proc every 50 ms) stays far below what the messages in flight add up
// to.
func TestLargeMessagesMemory(t *testing.T) {
	rs := redistest.Start(t)
	sk := startSink(t)
	// A 10 MB delivery on a loaded machine can outlast the suite's usual
	// 3 s lease, and the relay does not renew a lease while it sends: a
	// second worker would lease the answer and send it at the same time.
	// A lease well above the longest delivery, as in production (5 min
	// by default), keeps one sender per answer.
	rp := startRelay(t, relayOpts{Upstream: sk.Addr, RedisURL: rs.URL(), Workers: 4, LeaseTTL: 2 * time.Minute})
	idle := rp.peakHWM.Load()

	const size = 10 << 20
	sessions := scaled(50, 50)
	perSession := scaled(1, 4)
	n := sessions * perSession
	res := drive(context.Background(), t, loadSpec{Addrs: []string{rp.SMTP}, Answers: n, Sessions: sessions, PerConn: perSession,
		BodySize: size, Within: 10 * time.Minute})
	l := account(t, res, sk, []*relayProc{rp}, 5*time.Minute)
	l.check(t, []*relayProc{rp})
	time.Sleep(200 * time.Millisecond) // one more sample
	peak := rp.peakHWM.Load()
	inFlight := int64(sessions) * size >> 10
	figures(t, "sessions", sessions, "message_bytes", size, "answers", n, "accepted", l.Accepted, "elapsed", res.Elapsed.Round(time.Second),
		"idle_rss_kb", idle, "peak_rss_kb", peak, "bytes_in_flight_kb", inFlight, "at_sink", l.AtSink, "lost", l.Lost, "unsent", res.Unsent)
	if res.Unsent > 0 || l.Accepted != n {
		t.Errorf("accepted %d of %d large answers (%d unsent, %d deferred, %d connection errors)", l.Accepted, n, res.Unsent, res.Deferred, res.ConnErrors)
	}
	// Bounded: well under a quarter of the bytes in flight (it grows with
	// the sessions' buffers, 256 KiB store chunks, not with the message
	// size); holding each message whole would need all of them.
	if limit := inFlight / 4; peak > limit {
		t.Errorf("peak RSS %d kB with %d kB in flight: over the bound of %d kB", peak, inFlight, limit)
	}
}
