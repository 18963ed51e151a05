package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/answer-relay/answer-relay/api"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/relay"
	"github.com/answer-relay/answer-relay/relay/bounce"
	"github.com/answer-relay/answer-relay/webhook"
)

func init() {
	commands["serve"] = command{"run the relay: submission, delivery, bounces, webhooks and the API", runServe}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, _, err := loadConfig("serve", args, stderr)
	if err == nil {
		err = cfg.validate()
	}
	if err == nil && cfg.Relay.Upstream.Addr == "" {
		err = errors.New("upstream.addr: required for serve (ANSWER_RELAY_UPSTREAM_ADDR); try 'answer-relay demo' to run without one")
	}
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 2
	}
	logger := newLogger(cfg.Log, stderr)
	if err := serve(ctx, cfg, logger, time.Now, nil); err != nil {
		logger.Error("answer-relay stopped", "err", err)
		return 1
	}
	return 0
}

// started reports the addresses a running relay listens on, for tests and
// the demo.
type started struct {
	SMTP, Bounce, API net.Addr
}

// serve runs every part of the relay on one store until ctx is done, then
// shuts down in order: readiness off and intake stopped (the SMTP
// listeners and the API stop taking work), workers finish or release their
// leases, the dispatcher lets its claims lapse, and the store is closed
// last. If one part fails, the others are stopped the same way. onStart,
// if set, is called once everything listens.
func serve(ctx context.Context, cfg Config, logger *slog.Logger, clock outbox.Clock, onStart func(started)) error {
	opened, err := openStore(ctx, cfg, clock)
	if err != nil {
		return err
	}
	defer opened.Close()
	logger.Info("store open", "kind", opened.Kind)

	reg := newRegistry(opened, clock)
	store := outbox.Observed(opened, newEventObserver(reg, logger))
	rl, err := relay.New(cfg.Relay, store, logger.With("part", "relay"), reg, clock)
	if err != nil {
		return err
	}
	intake := bounce.NewIntake(cfg.Bounce, store, logger.With("part", "bounce"), bounce.NewMetrics(reg), clock)

	var bounceLn net.Listener
	if cfg.Bounce.Listen != "" {
		if bounceLn, err = net.Listen("tcp", cfg.Bounce.Listen); err != nil {
			return fmt.Errorf("bounce.listen: %w", err)
		}
	}
	var dispatcher *webhook.Dispatcher
	if cfg.Webhook.Enabled() {
		if dispatcher, err = webhook.NewDispatcher(cfg.Webhook, store, logger.With("part", "webhook"), reg, clock); err != nil {
			return err
		}
	}
	deps := api.Deps{
		Store:    store,
		Ingester: ingester{intake},
		ReadyChecks: map[string]api.ReadyCheck{
			"store":    store.Ping,
			"upstream": rl.UpstreamReachable,
		},
		Gatherer:  reg,
		Metrics:   api.NewMetrics(reg),
		Retention: time.Duration(cfg.Relay.RetentionDays) * 24 * time.Hour,
		Clock:     clock,
	}
	if dispatcher != nil {
		deps.Replayer = dispatcher
	}
	srv, err := api.New(cfg.API, deps, logger.With("part", "api"))
	if err != nil {
		return err
	}
	apiLn, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if v := recover(); v != nil {
					logger.Error("panic", "part", name, "panic", v)
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: panic: %v", name, v))
					mu.Unlock()
					stop()
				}
			}()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				stop() // one part failing stops the others
			}
		}()
	}
	run("relay", rl.Run)
	run("api", func(ctx context.Context) error { return srv.Serve(ctx, apiLn) })
	if bounceLn != nil {
		l := bounce.NewListener(cfg.Bounce, intake, logger.With("part", "bounce"))
		run("bounce listener", func(ctx context.Context) error { return l.Serve(ctx, bounceLn) })
	}
	if dispatcher != nil {
		run("webhook dispatcher", dispatcher.Run)
	}
	select {
	case <-rl.Ready():
		st := started{SMTP: rl.Addr(), API: apiLn.Addr()}
		if bounceLn != nil {
			st.Bounce = bounceLn.Addr()
		}
		logger.Info("answer-relay serving", "version", version, "smtp", st.SMTP.String(), "api", st.API.String(),
			"bounce", addrString(st.Bounce), "webhooks", dispatcher != nil, "pid", os.Getpid())
		if onStart != nil {
			onStart(st)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	logger.Info("answer-relay shutting down")
	wg.Wait()
	return errors.Join(errs...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// ingester adapts the bounce intake to the API's Ingester.
type ingester struct{ in *bounce.Intake }

func (g ingester) Ingest(ctx context.Context, raw io.Reader, source outbox.ReportSource) (api.IngestResult, error) {
	res, err := g.in.Ingest(ctx, raw, bounce.Envelope{Source: source})
	if err != nil {
		return api.IngestResult{}, err
	}
	out := api.IngestResult{
		Matched: res.AnswerID != "", AnswerID: res.AnswerID, ReportID: res.ReportID,
		Kind: res.Kind, Status: res.Status, Duplicate: res.Duplicate, Applied: res.Applied,
	}
	if out.Matched {
		out.MatchedBy = string(res.MatchedBy)
	}
	return out, nil
}
