package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// leaseKeeper extends the leases of a batch while a worker works through
// it, so that no other worker takes an answer this one is still sending,
// or has leased and not yet reached: a large body to a slow upstream, or
// the last answer of a batch, may take longer than delivery.lease_ttl.
// It extends every lease it still keeps each third of the ttl; a lease
// lost anyway (the worker stalled longer than a whole ttl) is marked, and
// the worker skips it.
type leaseKeeper struct {
	w    *worker
	mu   sync.Mutex
	keep map[*outbox.Lease]bool // false once lost
	stop chan struct{}
	done chan struct{}
}

// keep starts keeping leases; close stops it.
func (w *worker) keep(leases []*outbox.Lease) *leaseKeeper {
	k := &leaseKeeper{w: w, keep: make(map[*outbox.Lease]bool, len(leases)), stop: make(chan struct{}), done: make(chan struct{})}
	for _, l := range leases {
		k.keep[l] = true
	}
	if len(leases) == 0 {
		close(k.done)
		return k
	}
	go k.run(w.r.cfg.Delivery.LeaseTTL)
	return k
}

func (k *leaseKeeper) run(ttl time.Duration) {
	defer close(k.done)
	defer func() {
		if p := recover(); p != nil {
			k.w.r.panicked("delivery", p)
		}
	}()
	tick := time.NewTicker(max(ttl/3, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-tick.C:
			k.extend(ttl)
		}
	}
}

// extend extends every lease still kept. It holds the lock throughout, so
// finish waits for an extension in flight: after finish returns, the
// keeper no longer touches that lease.
func (k *leaseKeeper) extend(ttl time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for l, ok := range k.keep {
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := k.w.r.store.ExtendLease(ctx, l, ttl)
		cancel()
		switch {
		case errors.Is(err, outbox.ErrLeaseLost):
			k.keep[l] = false
			k.w.log.Warn("delivery: lease lost while held; another worker has the answer", "answer_id", l.Answer.ID)
		case err != nil:
			// The lease still runs until l.Until; the next tick tries again.
			k.w.r.metrics.StoreErrors.WithLabelValues("extend_lease").Inc()
			k.w.log.Error("delivery: extending a lease failed", "answer_id", l.Answer.ID, "err", err)
		}
	}
}

// finish stops keeping leases the worker is done with (or about to record
// or release).
func (k *leaseKeeper) finish(leases ...*outbox.Lease) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range leases {
		delete(k.keep, l)
	}
}

// lost reports whether a lease was lost while kept.
func (k *leaseKeeper) lost(l *outbox.Lease) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	ok, kept := k.keep[l]
	return kept && !ok
}

// close stops the keeper and waits for it.
func (k *leaseKeeper) close() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}
