package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/outbox"
)

// worker delivers leased answers over one upstream connection at a time,
// which it keeps open across answers.
//
// One delivery is a transaction in the sense of maddy's queue: lease the
// answer, read its body, send it to the pending recipients, and record the
// outcome of every recipient under the lease with context.WithoutCancel
// once the upstream has answered, so a shutdown never loses a reply the
// upstream already gave. A delivery the upstream never answered is released
// instead, and the answer is due again at once. While the worker works
// through a batch, a leaseKeeper (lease.go) extends the leases it has not
// finished with yet.
type worker struct {
	r     *Relay
	owner string
	log   *slog.Logger
	conn  *upConn
}

// storeTimeout bounds the store calls made after the work context ended.
const storeTimeout = 10 * time.Second

// run leases and delivers until stop is done, then finishes the answer in
// hand, releases the rest and closes its connection. hard bounds the
// in-flight deliveries.
func (w *worker) run(stop, hard context.Context) {
	defer w.closeConn()
	cfg := &w.r.cfg.Delivery
	idle := time.NewTimer(cfg.PollInterval)
	defer idle.Stop()
	for stop.Err() == nil {
		leases, err := w.r.store.Lease(hard, w.owner, cfg.LeaseBatch, cfg.LeaseTTL)
		if err != nil {
			w.r.metrics.StoreErrors.WithLabelValues("lease").Inc()
			w.log.Error("delivery: lease failed", "err", err)
		}
		keeper := w.keep(leases)
		for i, l := range leases {
			if stop.Err() != nil {
				keeper.finish(leases[i:]...)
				w.release(leases[i:])
				break
			}
			if keeper.lost(l) {
				continue // another worker has it now
			}
			w.deliverSafely(hard, l, keeper)
		}
		keeper.close()
		if len(leases) > 0 && err == nil {
			continue
		}
		// Nothing due: wait for a new answer, the poll interval, or the
		// idle connection's end.
		wait := cfg.PollInterval
		if w.conn != nil {
			if left := cfg.IdleTimeout - time.Since(w.conn.lastUsed); left <= 0 {
				w.closeConn()
			} else {
				wait = min(wait, left)
			}
		}
		idle.Reset(wait)
		select {
		case <-stop.Done():
		case <-w.r.kick:
		case <-idle.C:
		}
	}
}

func (w *worker) release(leases []*outbox.Lease) {
	for _, l := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		if err := w.r.store.Release(ctx, l); err != nil && !errors.Is(err, outbox.ErrLeaseLost) {
			w.r.metrics.StoreErrors.WithLabelValues("release").Inc()
			w.log.Error("delivery: release failed", "answer_id", l.Answer.ID, "err", err)
		}
		cancel()
	}
}

// deliverSafely delivers one leased answer; a panic is counted, logged and
// the lease released.
func (w *worker) deliverSafely(ctx context.Context, l *outbox.Lease, keeper *leaseKeeper) {
	defer func() {
		if p := recover(); p != nil {
			w.r.panicked("delivery", p)
			w.closeConn()
			keeper.finish(l)
			w.release([]*outbox.Lease{l})
		}
	}()
	w.deliver(ctx, l, keeper)
}

func (w *worker) deliver(ctx context.Context, l *outbox.Lease, keeper *leaseKeeper) {
	a := l.Answer
	log := w.log.With("answer_id", a.ID)
	pending := a.PendingRecipients()
	if len(pending) == 0 {
		keeper.finish(l)
		w.release([]*outbox.Lease{l})
		return
	}
	start := time.Now()
	att, answered := w.attempt(ctx, a, pending)
	att.Duration = time.Since(start)
	w.r.metrics.AttemptDuration.Observe(att.Duration.Seconds())

	keeper.finish(l) // from here on the lease is only ended, never extended
	if !answered && ctx.Err() != nil {
		// Shutdown cut the attempt short before the upstream said anything.
		w.release([]*outbox.Lease{l})
		return
	}
	w.schedule(a, &att)
	w.r.metrics.Attempts.WithLabelValues(attemptResult(att)).Inc()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if _, err := w.r.store.RecordAttempt(rctx, l, att); err != nil {
		if errors.Is(err, outbox.ErrLeaseLost) {
			log.Warn("delivery: lease lost before the attempt was recorded", "upstream", att.Upstream)
			return
		}
		w.r.metrics.StoreErrors.WithLabelValues("record").Inc()
		log.Error("delivery: attempt not recorded; the answer is retried when its lease ends", "err", err)
		return
	}
	for _, o := range att.Outcomes {
		log.Info("delivery attempt", "recipient", o.Address, "outcome", o.Kind, "code", o.Code,
			"enhanced", o.Enhanced, "text", o.Text, "reason", o.Reason, "upstream", att.Upstream)
	}
}

// attemptResult is the upstream_attempts_total label of an attempt.
func attemptResult(att outbox.Attempt) string {
	if att.Error != "" {
		return "error"
	}
	res := "sent"
	for _, o := range att.Outcomes {
		switch o.Kind {
		case outbox.OutcomeTemporary:
			return "temporary"
		case outbox.OutcomePermanent:
			res = "permanent"
		}
	}
	return res
}

// jitter is the largest random part added to a retry delay, as a fraction.
const jitter = 0.2

// schedule sets the next attempt time for temporary outcomes from the
// retry schedule; once the answer's maximum lifetime has passed they become
// permanent with reason "expired". The last retry is made at the end of
// the lifetime, not before it.
func (w *worker) schedule(a *outbox.Answer, att *outbox.Attempt) {
	now := w.r.clock()
	deadline := a.QueuedAt.Add(w.r.cfg.Delivery.MaxLifetime)
	temporary := false
	for i := range att.Outcomes {
		o := &att.Outcomes[i]
		if o.Kind != outbox.OutcomeTemporary {
			continue
		}
		if !now.Before(deadline) {
			o.Kind, o.Reason = outbox.OutcomePermanent, "expired"
			continue
		}
		temporary = true
	}
	if !temporary {
		return
	}
	n := len(a.Attempts)
	delay := w.r.retry[min(n, len(w.r.retry)-1)]
	delay += time.Duration(rand.Float64() * jitter * float64(delay))
	att.NextAttemptAt = now.Add(delay)
	if att.NextAttemptAt.After(deadline) {
		att.NextAttemptAt = deadline
	}
}

// attempt sends a to its pending recipients and returns one outcome per
// recipient, and whether the upstream replied to the transaction at all.
func (w *worker) attempt(ctx context.Context, a *outbox.Answer, pending []string) (att outbox.Attempt, answered bool) {
	att.StartedAt = w.r.clock()
	fail := func(err error) {
		att.Error = err.Error()
		att.Outcomes = att.Outcomes[:0]
		for _, rc := range pending {
			o := classify(err)
			o.Kind, o.Reason = outbox.OutcomeTemporary, "" // a connection-level failure is never the message's fault
			o.Address = rc
			att.Outcomes = append(att.Outcomes, o)
		}
	}

	body, err := w.r.store.Body(ctx, a.ID)
	if err != nil {
		w.r.metrics.StoreErrors.WithLabelValues("body").Inc()
		fail(fmt.Errorf("relay: read the stored message: %w", err))
		return att, false
	}
	defer body.Close()

	for try := 0; ; try++ {
		uc, reused, err := w.connection(ctx)
		if err != nil {
			att.Upstream = w.r.ups.choose().addr
			fail(err)
			return att, false
		}
		att.Upstream = uc.up.addr
		stop := context.AfterFunc(ctx, func() { _ = uc.c.Close() })
		res := w.transaction(uc, a, pending, body)
		stop()
		uc.lastUsed = time.Now()
		uc.sent++
		if res.broken != nil {
			w.closeConn()
			if reused && !res.answered && try == 0 && ctx.Err() == nil {
				// An idle connection the server had closed: try once on a
				// fresh one before counting an attempt.
				continue
			}
			if w.r.ups.failed(uc.up) {
				w.log.Warn("delivery: primary upstream failed, secondary takes over", "err", res.broken)
			}
			if !res.answered {
				fail(res.broken)
				return att, false
			}
		}
		att.Outcomes = res.outcomes
		return att, res.answered
	}
}

// connection returns the worker's open connection, or a new one to the
// server upstreams.choose names; a failing primary hands over to the
// secondary at once.
func (w *worker) connection(ctx context.Context) (uc *upConn, reused bool, err error) {
	want := w.r.ups.choose()
	if w.conn != nil && (w.conn.up != want || w.conn.sent >= w.r.cfg.Delivery.MaxPerConnection ||
		time.Since(w.conn.lastUsed) > w.r.cfg.Delivery.IdleTimeout) {
		w.closeConn()
	}
	if w.conn != nil {
		return w.conn, true, nil
	}
	uc, err = w.r.ups.dial(ctx, want)
	if err != nil && ctx.Err() == nil && w.r.ups.failed(want) {
		w.log.Warn("delivery: primary upstream failed, secondary takes over", "err", err)
		uc, err = w.r.ups.dial(ctx, w.r.ups.secondary)
	}
	if err != nil {
		return nil, false, err
	}
	uc.lastUsed = time.Now()
	w.conn = uc
	return uc, false, nil
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.close()
		w.conn = nil
	}
}

// txResult is the result of one SMTP transaction.
type txResult struct {
	outcomes []outbox.RecipientOutcome
	// answered: the upstream replied to MAIL FROM, so the outcomes are its
	// word, not the relay's guess.
	answered bool
	// broken is the error that left the connection unusable, if any.
	broken error
}

// transaction runs MAIL, RCPT and DATA (RFC 5321 section 3.3) for the
// pending recipients, with the DSN parameters of RFC 3461 section 4 when
// the upstream offers DSN.
func (w *worker) transaction(uc *upConn, a *outbox.Answer, rcpts []string, body io.Reader) (res txResult) {
	c := uc.c
	cfg := &w.r.cfg.Delivery
	outcome := make(map[string]outbox.RecipientOutcome, len(rcpts))
	defer func() {
		for _, rc := range rcpts {
			o, ok := outcome[rc]
			if !ok {
				o = outbox.RecipientOutcome{Kind: outbox.OutcomeTemporary, Text: "no reply from the upstream"}
				if res.broken != nil {
					o = classify(res.broken)
					o.Kind, o.Reason = outbox.OutcomeTemporary, ""
				}
			}
			o.Address = rc
			res.outcomes = append(res.outcomes, o)
		}
	}()
	all := func(list []string, err error) {
		for _, rc := range list {
			outcome[rc] = classify(err)
		}
	}

	from := a.Sender
	if cfg.VERPPrefix != "" {
		from = cfg.VERPPrefix + "+" + a.ID + "@" + cfg.BounceDomain
	}
	opts := &smtp.MailOptions{Size: a.Size, Return: smtp.DSNReturnHeaders, EnvelopeID: a.EnvelopeID}
	utf8Envelope := !isASCII(from)
	for _, rc := range rcpts {
		utf8Envelope = utf8Envelope || !isASCII(rc)
	}
	if utf8Envelope || headersNeedUTF8(a) {
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			opts.UTF8 = true
		} else if utf8Envelope {
			// RFC 6531 section 3.2: no downgrade of UTF-8 addresses.
			res.answered = true
			all(rcpts, &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "the upstream does not support SMTPUTF8 for a non-ASCII address"})
			return res
		}
	}
	if err := c.Mail(from, opts); err != nil {
		if !isReply(err) {
			res.broken = err
			return res
		}
		res.answered = true
		all(rcpts, err)
		_ = c.Reset()
		return res
	}
	res.answered = true
	notify := []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}
	if cfg.NotifySuccess {
		notify = append(notify, smtp.DSNNotifySuccess)
	}
	var accepted []string
	for _, rc := range rcpts {
		err := c.Rcpt(rc, &smtp.RcptOptions{Notify: notify})
		switch {
		case err == nil:
			accepted = append(accepted, rc)
		case isReply(err):
			outcome[rc] = classify(err)
		default:
			res.broken = err
			return res
		}
	}
	if len(accepted) == 0 {
		_ = c.Reset()
		return res
	}
	wc, err := c.Data()
	if err != nil {
		if !isReply(err) {
			res.broken = err
			return res
		}
		all(accepted, err)
		_ = c.Reset()
		return res
	}
	if _, err := io.Copy(wc, body); err != nil {
		// The data cannot be taken back: the connection goes.
		res.broken = fmt.Errorf("relay: sending the message: %w", err)
		return res
	}
	resp, err := wc.CloseWithResponse()
	if err != nil {
		if !isReply(err) {
			res.broken = err
			return res
		}
		all(accepted, err)
		return res
	}
	enh, text := splitEnhanced(resp.StatusText)
	for _, rc := range accepted {
		outcome[rc] = outbox.RecipientOutcome{Kind: outbox.OutcomeSent, Code: 250, Enhanced: enh, Text: text}
	}
	return res
}

var enhancedPrefix = regexp.MustCompile(`^([245]\.\d{1,3}\.\d{1,3}) (.*)$`)

// splitEnhanced splits "2.0.0 Ok: queued as X" into the code and the text.
func splitEnhanced(s string) (string, string) {
	if m := enhancedPrefix.FindStringSubmatch(s); m != nil {
		return m[1], m[2]
	}
	return "", s
}
