package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the part of outbox.Store the dispatcher uses: the event log, the
// dead letters and the endpoints' disabled flags. Every outbox engine
// satisfies it.
type Store interface {
	// ClaimEvents hands each answer's first unacknowledged event, at most
	// max of them, to consumer until now+ttl; never one event to two
	// consumers at once.
	ClaimEvents(ctx context.Context, consumer string, max int, ttl time.Duration) ([]*outbox.EventClaim, error)
	// AckEvent ends a claim: every endpoint has the event.
	AckEvent(ctx context.Context, c *outbox.EventClaim) error
	// RetryEvent ends a claim and makes the event claimable again at at,
	// remembering the endpoints in done.
	RetryEvent(ctx context.Context, c *outbox.EventClaim, at time.Time, done []string) error
	// EventStats returns the backlog, for the metrics.
	EventStats(ctx context.Context) (outbox.EventStats, error)
	// AddDeadLetter keeps an event an endpoint did not take.
	AddDeadLetter(ctx context.Context, d outbox.DeadLetter) error
	// TakeDeadLetter removes a dead letter and returns it, for a replay.
	TakeDeadLetter(ctx context.Context, id string) (outbox.DeadLetter, error)
	// SetEndpointDisabled and EndpointDisabled keep the flag a 410 sets,
	// shared by every replica.
	SetEndpointDisabled(ctx context.Context, endpoint string, disabled bool) error
	EndpointDisabled(ctx context.Context, endpoint string) (bool, error)
}

var _ Store = outbox.Store(nil)

// Errors of Replay and SetEndpointEnabled.
var (
	// ErrUnknownEndpoint: no endpoint of that name is configured (any
	// more). It matches outbox.ErrIllegalTransition, which the API maps to
	// 409 Conflict.
	ErrUnknownEndpoint error = &conflict{"webhook: unknown endpoint"}
	// ErrEndpointDisabled: the endpoint answered 410 Gone and stays
	// disabled until an operator enables it again. It matches
	// outbox.ErrIllegalTransition (409 Conflict).
	ErrEndpointDisabled error = &conflict{"webhook: endpoint disabled"}
	// ErrDeliveryFailed: the endpoint did not take a replayed event; the
	// dead letter was put back. The API answers 502 Bad Gateway.
	ErrDeliveryFailed = errors.New("webhook: delivery failed")
)

// conflict is an error that the state of an endpoint, not the request,
// refuses: errors.Is matches it with itself and with
// outbox.ErrIllegalTransition.
type conflict struct{ msg string }

func (e *conflict) Error() string { return e.msg }

// Is makes errors.Is(err, outbox.ErrIllegalTransition) true.
func (e *conflict) Is(target error) bool { return target == outbox.ErrIllegalTransition }

// disabledTTL is how long a replica trusts its copy of an endpoint's
// disabled flag before asking the store again: a re-enable on another
// replica takes effect here within this time.
const disabledTTL = time.Second

// recordTimeout bounds the store writes after a POST, which run even when
// the dispatcher is being stopped (the POST's outcome is known and must not
// be lost).
const recordTimeout = 10 * time.Second

// Dispatcher consumes the store's event log and posts each event to every
// endpoint whose filter takes it. Several dispatchers (one per replica) may
// share one store: the store's claims keep them from posting one event at
// the same time.
type Dispatcher struct {
	cfg       Config
	store     Store
	log       *slog.Logger
	metrics   *Metrics
	clock     outbox.Clock
	client    *client
	endpoints []*endpoint
	byName    map[string]*endpoint
	consumer  string

	mu       sync.Mutex
	disabled map[string]cachedFlag
}

type cachedFlag struct {
	disabled bool
	at       time.Time
}

// NewDispatcher checks cfg and returns a dispatcher for store. The logger and
// registry are the caller's (reg may be nil); clock tells the time (nil for
// time.Now) and must be the store's clock, since retry times are compared by
// the store.
func NewDispatcher(cfg Config, store Store, logger *slog.Logger, reg prometheus.Registerer, clock outbox.Clock) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("webhook: no store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = time.Now
	}
	eps, err := buildEndpoints(&cfg)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg:       cfg,
		store:     store,
		log:       logger.With("component", "webhook"),
		metrics:   NewMetrics(reg),
		clock:     clock,
		client:    newClient(cfg.Workers),
		endpoints: eps,
		byName:    map[string]*endpoint{},
		consumer:  consumerName(),
		disabled:  map[string]cachedFlag{},
	}
	for _, e := range eps {
		d.byName[e.name] = e
	}
	d.metrics.setStats(func(ctx context.Context) (outbox.EventStats, time.Time, error) {
		st, err := d.store.EventStats(ctx)
		return st, d.clock(), err
	})
	return d, nil
}

// consumerName names this replica in claims: host, process and a random
// part, so two dispatchers in one process differ too.
func consumerName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Run delivers events until ctx is done, then waits for its in-flight
// deliveries. A POST cut short by ctx records nothing: its claim lapses and
// the event goes out again (from this replica or another) after ClaimTTL.
// A POST that got its answer is recorded even while stopping. Run returns
// nil when ctx ends; store errors are logged and retried, not returned.
func (d *Dispatcher) Run(ctx context.Context) error {
	workers := d.cfg.Workers
	busy := make(chan struct{}, workers)     // one token per delivery in flight
	finished := make(chan struct{}, workers) // a delivery ended: its answer's next event may be due
	var wg sync.WaitGroup
	defer wg.Wait()

	timer := time.NewTimer(0)
	defer timer.Stop()
	errDelay := d.cfg.PollInterval
	d.log.Info("webhook dispatcher started", "consumer", d.consumer, "endpoints", len(d.endpoints), "workers", workers)
	for {
		if ctx.Err() != nil {
			d.log.Info("webhook dispatcher stopping", "in_flight", len(busy))
			return nil
		}
		free := workers - len(busy)
		if free == 0 {
			select {
			case <-ctx.Done():
			case <-finished:
			}
			continue
		}
		claims, err := d.claim(ctx, free)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			d.metrics.StoreErrors.Inc()
			d.log.Error("claiming webhook events failed", "err", err, "retry_in", errDelay)
			if !sleep(ctx, timer, errDelay) {
				continue
			}
			errDelay = min(2*errDelay, 5*time.Second)
			continue
		}
		errDelay = d.cfg.PollInterval
		for _, c := range claims {
			busy <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					<-busy
					select {
					case finished <- struct{}{}:
					default:
					}
				}()
				defer d.recoverPanic("delivery", "event_id", c.Event.ID)
				d.deliver(ctx, c)
			}()
		}
		if len(claims) == free {
			continue // there may be more
		}
		timer.Reset(d.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-finished:
		case <-timer.C:
		}
		stopTimer(timer)
	}
}

// claim calls ClaimEvents, turning a panic in the store into an error.
func (d *Dispatcher) claim(ctx context.Context, max int) (claims []*outbox.EventClaim, err error) {
	defer func() {
		if p := recover(); p != nil {
			d.metrics.Panics.Inc()
			err = fmt.Errorf("webhook: panic in ClaimEvents: %v", p)
		}
	}()
	return d.store.ClaimEvents(ctx, d.consumer, max, d.cfg.ClaimTTL)
}

// recoverPanic ends a goroutine that panicked with a log line and a count;
// the event's claim lapses and the event is delivered again.
func (d *Dispatcher) recoverPanic(where string, args ...any) {
	if p := recover(); p != nil {
		d.metrics.Panics.Inc()
		d.log.Error("panic in webhook "+where, append(args, "panic", p, "stack", string(debug.Stack()))...)
	}
}

// sleep waits for d or ctx and reports whether d passed.
func sleep(ctx context.Context, t *time.Timer, d time.Duration) bool {
	t.Reset(d)
	select {
	case <-ctx.Done():
		stopTimer(t)
		return false
	case <-t.C:
		return true
	}
}

func stopTimer(t *time.Timer) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
}

// target is the result of one event for one endpoint.
type target struct {
	ep  *endpoint
	res result
}

// deliver posts one claimed event to every endpoint that takes it and does
// not have it yet, then records the outcome in the store: ack when no
// endpoint needs another try, else retry at the next backoff time with the
// endpoints that are done remembered. Dead letters are written before the
// ack or retry that forgets them.
func (d *Dispatcher) deliver(ctx context.Context, c *outbox.EventClaim) {
	ev := c.Event
	log := d.log.With("event_id", ev.ID, "event", string(ev.Type), "answer_id", ev.AnswerID, "attempt", c.Attempts+1)
	now := d.clock()
	// Stop posting well before the claim lapses, so no other replica can
	// claim the event while this one still posts it.
	left := c.Until.Sub(now) - d.cfg.ClaimTTL/10
	if left <= 0 {
		log.Warn("webhook claim lapsed before delivery; the event will be claimed again")
		return
	}
	body, err := NewPayload(ev, d.cfg.APIBaseURL).marshal()
	if err != nil {
		log.Error("encoding webhook payload failed", "err", err) // cannot happen: plain fields
		return
	}

	var targets []*target
	for _, ep := range d.endpoints {
		if ep.wants(ev.Type) && !slices.Contains(c.Done, ep.name) {
			targets = append(targets, &target{ep: ep})
		}
	}
	var wg sync.WaitGroup
	for _, t := range targets {
		if len(targets) == 1 {
			t.res = d.send(ctx, t.ep, ev, body, left, log)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer d.recoverPanic("post", "event_id", ev.ID, "endpoint", t.ep.name)
			t.res = d.send(ctx, t.ep, ev, body, left, log)
		}()
	}
	wg.Wait()
	for _, t := range targets {
		if t.res.outcome == "" {
			// Cut short by shutdown (or a panic): record nothing and let the
			// claim lapse, since the receiver may still be working on it.
			return
		}
	}

	// The outcomes are known: record them even if ctx ends now.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	now = d.clock()
	first := c.FirstAttemptAt
	if first.IsZero() {
		first = now
	}
	deadline := first.Add(d.cfg.MaxAge)
	done := slices.Clone(c.Done)
	var retryAfter time.Duration
	retrying := false
	for _, t := range targets {
		if t.res.outcome == OutcomeRetry {
			if now.Before(deadline) {
				retrying = true
				retryAfter = max(retryAfter, t.res.retryAfter)
				continue
			}
			t.res.outcome = OutcomeDeadLetter
			t.res.reason = fmt.Sprintf("gave up after %d attempts in %s: %s", c.Attempts+1, now.Sub(first).Round(time.Second), t.res.reason)
		}
		done = append(done, t.ep.name)
	}
	for _, t := range targets {
		d.metrics.Deliveries.WithLabelValues(string(ev.Type), t.res.outcome).Inc()
		if t.res.outcome != OutcomeDeadLetter && t.res.outcome != OutcomeDisabled {
			continue
		}
		dl := outbox.DeadLetter{
			ID: outbox.DeadLetterID(ev.ID, t.ep.name), Event: ev, Endpoint: t.ep.name,
			Reason: t.res.reason, Attempts: c.Attempts + 1, At: now,
		}
		if err := d.store.AddDeadLetter(rctx, dl); err != nil {
			d.metrics.StoreErrors.Inc()
			log.Error("writing webhook dead letter failed; the event will be claimed again", "endpoint", t.ep.name, "err", err)
			return
		}
		d.metrics.DeadLetters.Inc()
		log.Warn("webhook event dead-lettered", "endpoint", t.ep.name, "reason", t.res.reason, "dead_letter_id", dl.ID)
	}

	if !retrying {
		if err := d.store.AckEvent(rctx, c); err != nil {
			d.storeFailed(log, "acknowledging webhook event", err)
		}
		return
	}
	delay := max(d.backoff(c.Attempts), retryAfter)
	at := now.Add(delay)
	if at.After(deadline) {
		at = deadline // one last attempt at the age limit
	}
	if err := d.store.RetryEvent(rctx, c, at, done); err != nil {
		d.storeFailed(log, "scheduling webhook retry", err)
		return
	}
	log.Info("webhook event will be retried", "at", at, "in", at.Sub(now).Round(time.Millisecond))
}

// storeFailed logs a failed Ack or Retry. A lost claim means the event is
// delivered again: at least once, never lost.
func (d *Dispatcher) storeFailed(log *slog.Logger, what string, err error) {
	if errors.Is(err, outbox.ErrLeaseLost) {
		log.Warn(what+": the claim had lapsed; the event will be delivered again", "err", err)
		return
	}
	d.metrics.StoreErrors.Inc()
	log.Error(what+" failed; the claim will lapse and the event be delivered again", "err", err)
}

// backoff is the wait before attempt n+2 (n earlier retries): BackoffMin
// doubled n times, at most BackoffMax, with ±20% jitter so that answers that
// failed together do not come back together.
func (d *Dispatcher) backoff(n int) time.Duration {
	b := float64(d.cfg.BackoffMin) * math.Pow(2, float64(min(n, 62)))
	b = min(b, float64(d.cfg.BackoffMax))
	return time.Duration(b * (0.8 + 0.4*mrand.Float64()))
}

// send posts to one endpoint unless it is disabled. The zero result means
// ctx ended before an answer.
func (d *Dispatcher) send(ctx context.Context, ep *endpoint, ev outbox.Event, body []byte, left time.Duration, log *slog.Logger) result {
	disabled, err := d.endpointDisabled(ctx, ep.name)
	if err != nil {
		if ctx.Err() != nil {
			return result{}
		}
		// Unknown: post anyway. An endpoint that is gone answers 410 again.
		d.metrics.StoreErrors.Inc()
		log.Error("reading the endpoint's disabled flag failed", "endpoint", ep.name, "err", err)
	}
	if disabled {
		return result{outcome: OutcomeDisabled, reason: "endpoint disabled after 410 Gone; enable it and replay"}
	}
	res := d.post(ctx, ep, ev, body, min(ep.timeout, left))
	switch res.outcome {
	case "":
	case OutcomeSuccess:
		log.Debug("webhook delivered", "endpoint", ep.name, "status", res.status, "duration", res.duration)
	case OutcomeDisabled:
		d.disable(ctx, ep, log)
	default:
		log.Warn("webhook delivery failed", "endpoint", ep.name, "url", redactURL(ep.url), "outcome", res.outcome, "status", res.status, "reason", res.reason)
	}
	return res
}

// disable records that an endpoint answered 410 Gone.
func (d *Dispatcher) disable(ctx context.Context, ep *endpoint, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := d.store.SetEndpointDisabled(ctx, ep.name, true); err != nil {
		d.metrics.StoreErrors.Inc()
		log.Error("disabling webhook endpoint failed", "endpoint", ep.name, "err", err)
		return
	}
	d.setCached(ep.name, true)
	log.Error("webhook endpoint answered 410 Gone: disabled until an operator enables it", "endpoint", ep.name, "url", redactURL(ep.url))
}

// endpointDisabled reads an endpoint's disabled flag through a short cache.
func (d *Dispatcher) endpointDisabled(ctx context.Context, name string) (bool, error) {
	now := time.Now()
	d.mu.Lock()
	f, ok := d.disabled[name]
	d.mu.Unlock()
	if ok && now.Sub(f.at) < disabledTTL {
		return f.disabled, nil
	}
	v, err := d.store.EndpointDisabled(ctx, name)
	if err != nil {
		return false, err
	}
	d.setCached(name, v)
	return v, nil
}

func (d *Dispatcher) setCached(name string, v bool) {
	d.mu.Lock()
	d.disabled[name] = cachedFlag{disabled: v, at: time.Now()}
	d.mu.Unlock()
}
