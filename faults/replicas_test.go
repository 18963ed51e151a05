//go:build linux

package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

// TestReplicasShareWork is cases 5 and 6: three relay replicas on one Redis
// (a single node, a Cluster of three masters, a Sentinel setup), one
// replica SIGKILLed for good mid-run; with Sentinel the Redis master is
// killed too, later in the run, and the replica takes over. Work is shared
// by the replicas, nothing accepted is lost, and no answer is ever sent by
// two senders at once (leases).
func TestReplicasShareWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		// start returns the store URL and, for Sentinel, the Redis fault.
		start func(t *testing.T) (url string, failover func())
	}{
		{"node", func(t *testing.T) (string, func()) {
			return redistest.Start(t, redistest.WithAOF()).URL(), nil
		}},
		{"cluster", func(t *testing.T) (string, func()) {
			return redistest.StartCluster(t, 3).URL(), nil
		}},
		{"sentinel", func(t *testing.T) (string, func()) {
			sn := redistest.StartSentinel(t, 1)
			return sn.URL(), sn.Master().Kill
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, failover := tc.start(t)
			sk := startSink(t)
			var rps []*relayProc
			var addrs []string
			for i := range 3 {
				rp := startRelay(t, relayOpts{Name: fmt.Sprintf("replica-%d", i+1), Upstream: sk.Addr, RedisURL: url, Workers: 2, LeaseTTL: 3 * time.Second})
				rps = append(rps, rp)
				addrs = append(addrs, rp.SMTP)
			}
			n := scaled(1200, 10000)
			rate := scaled(100, 200)
			run := time.Duration(n/rate) * time.Second
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			wg.Go(func() {
				sleepCtx(ctx, run/3)
				if ctx.Err() == nil {
					rps[1].kill() // for good
				}
				if failover != nil {
					sleepCtx(ctx, run/3)
					if ctx.Err() == nil {
						failover()
					}
				}
			})
			res := drive(ctx, t, loadSpec{Addrs: addrs, Answers: n, Sessions: 9, Rate: rate, RejectEvery: 50, Within: 10 * time.Minute})
			wg.Wait()

			l := account(t, res, sk, rps, 2*time.Minute)
			l.check(t, rps)
			kv := []any{"store", tc.name, "answers_sent", n, "accepted", l.Accepted, "elapsed", res.Elapsed.Round(time.Second),
				"replicas", 3, "replica_kills", 1}
			if failover != nil {
				kv = append(kv, "master_killed", true)
			}
			for _, rp := range rps {
				kv = append(kv, "sent_by_"+rp.name, l.ByReplica[rp.name])
			}
			kv = append(kv, "at_sink", l.AtSink, "not_delivered", l.NotDelivered, "lost", l.Lost, "duplicates", l.Duplicates,
				"concurrent_sends", l.Concurrent, "refused_4xx", res.Deferred, "conn_errors", res.ConnErrors, "unsent", res.Unsent)
			figures(t, kv...)
			if res.Unsent > 0 {
				t.Errorf("%d answers never accepted", res.Unsent)
			}
			for _, rp := range []*relayProc{rps[0], rps[2]} {
				if share := l.ByReplica[rp.name]; share*10 < l.AtSink {
					t.Errorf("%s sent %d of %d answers: the work is not shared", rp.name, share, l.AtSink)
				}
				if !rp.running() {
					t.Errorf("%s exited: %s", rp.name, rp.logTail(10))
				}
			}
		})
	}
}
