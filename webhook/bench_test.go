package webhook_test

import (
	"slices"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/webhook"
)

// BenchmarkThroughput measures events per second from a store holding a
// backlog to a local receiver that verifies each signature and answers 200
// at once, with the default settings (16 workers). "spread" has one event
// per answer, so every event can go out in parallel; "ordered" has four per
// answer, which go out one after the other. Run it once:
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./webhook/
func BenchmarkThroughput(b *testing.B) {
	for _, be := range backends {
		for _, shape := range []struct {
			name    string
			answers int
			full    bool
		}{{"spread", 4000, false}, {"ordered", 1000, true}} {
			b.Run(be.name+"/"+shape.name, func(b *testing.B) {
				clk := &clock{}
				st, _ := be.open(b, clk.Now)
				rcv := newReceiver(b, clk)
				ids := produce(b, st, clk, shape.answers, shape.full)
				perAnswer := int64(1)
				if shape.full {
					perAnswer = 4
				}
				cfg := webhook.Defaults()
				cfg.URL, cfg.Secret = rcv.URL(), secret
				b.ResetTimer()
				began := time.Now()
				start(b, cfg, st, clk)
				waitFor(b, 2*time.Minute, "the backlog delivered", func() bool { return rcv.deliveredAll(ids, perAnswer) })
				elapsed := time.Since(began)
				b.StopTimer()
				events := float64(int64(shape.answers) * perAnswer)
				b.ReportMetric(events/elapsed.Seconds(), "events/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkIdleLatency measures the time from an event (its timestamp,
// taken just before the store accepts the answer) to its arrival at the
// receiver, for a dispatcher that is idle: one answer every 25 ms, 200 in
// all, with the default poll interval of 20 ms.
//
//	go test -run '^$' -bench IdleLatency -benchtime 1x ./webhook/
func BenchmarkIdleLatency(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			clk := &clock{}
			st, _ := be.open(b, clk.Now)
			rcv := newReceiver(b, clk)
			cfg := webhook.Defaults()
			cfg.URL, cfg.Secret = rcv.URL(), secret
			start(b, cfg, st, clk)
			const n = 200
			var ids []string
			var acc []time.Duration
			for range n {
				t0 := time.Now()
				ids = append(ids, produce(b, st, clk, 1, false)...)
				acc = append(acc, time.Since(t0))
				time.Sleep(25 * time.Millisecond)
			}
			slices.Sort(acc)
			b.Logf("produce p50 %s p99 %s", acc[n/2], acc[n*99/100])
			waitFor(b, 10*time.Second, "every event", func() bool { return rcv.deliveredAll(ids, 1) })
			var lat []time.Duration
			for _, id := range ids {
				c := rcv.callsOf(id + "-1")[0]
				lat = append(lat, c.At.Sub(c.Body.Timestamp))
			}
			slices.Sort(lat)
			q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
			b.ReportMetric(float64(q(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(q(0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(0, "ns/op")
			b.Logf("p50 %s p99 %s max %s", q(0.5), q(0.99), lat[len(lat)-1])
		})
	}
}
