package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/answer-relay/answer-relay/outbox"
)

// Acceptor is what the submission listener needs of the store.
type Acceptor interface {
	// Accept stores a new answer with its body (see outbox.Store.Accept).
	Accept(ctx context.Context, a *outbox.Answer, body io.Reader) error
}

// Deliverer is what the delivery workers need of the store.
type Deliverer interface {
	Lease(ctx context.Context, owner string, max int, ttl time.Duration) ([]*outbox.Lease, error)
	RecordAttempt(ctx context.Context, l *outbox.Lease, att outbox.Attempt) (*outbox.Answer, error)
	Release(ctx context.Context, l *outbox.Lease) error
	ExtendLease(ctx context.Context, l *outbox.Lease, ttl time.Duration) error
	Body(ctx context.Context, id string) (io.ReadCloser, error)
}

// Sweeper is what the sweeper needs of the store.
type Sweeper interface {
	MarkDelayed(ctx context.Context, queuedBefore time.Time, max int) ([]outbox.Event, error)
	Expire(ctx context.Context, acceptedBefore time.Time, max int) (int, error)
}

// Store is the part of outbox.Store the relay uses. The relay never closes
// it: its owner does, after Run returned.
type Store interface {
	Acceptor
	Deliverer
	Sweeper
}

var _ Store = outbox.Store(nil)

// Relay is the submission listener(s), the delivery workers and the
// sweeper, run together by Run.
type Relay struct {
	cfg     Config
	store   Store
	log     *slog.Logger
	metrics *Metrics
	clock   outbox.Clock

	hostname string
	networks []netip.Prefix
	users    map[string][]byte
	// senderDomains are the domains a user may send from; users without
	// an entry are not limited.
	senderDomains map[string]map[string]bool
	subject       *regexp.Regexp
	retry         []time.Duration
	ups           *upstreams

	server    *smtp.Server
	listeners []net.Listener

	baseCtx      context.Context
	cancelBase   context.CancelFunc
	active       atomic.Int64 // open sessions
	authThrottle authThrottle
	kick         chan struct{}
	ready        chan struct{}
	ran          atomic.Bool
}

// New checks cfg, binds the submission listener(s) and returns a relay
// ready to Run. A nil logger discards, a nil registry leaves the metrics
// unregistered, and a nil clock is time.Now.
func New(cfg Config, store Store, logger *slog.Logger, reg prometheus.Registerer, clock outbox.Clock) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay: config: %w", err)
	}
	if store == nil {
		return nil, errors.New("relay: no store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = time.Now
	}
	r := &Relay{
		cfg: cfg, store: store, log: logger, metrics: NewMetrics(reg), clock: clock,
		hostname: cfg.SMTP.Hostname,
		kick:     make(chan struct{}, cfg.Delivery.Workers),
		ready:    make(chan struct{}),
	}
	if r.hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		r.hostname = h
	}
	r.networks, _ = parseNetworks(cfg.SMTP.AllowNetworks)
	r.users, _ = parseUsers(cfg.SMTP.Users)
	r.senderDomains, _ = parseSenderDomains(cfg.SMTP.SenderDomains)
	r.subject, _ = compileSubject(cfg.SMTP.SubjectPattern)
	r.retry = cfg.Delivery.RetryDelays()
	helo := cfg.Upstream.Hostname
	if helo == "" {
		helo = r.hostname
	}
	var err error
	if r.ups, err = newUpstreams(cfg.Upstream, helo, clock); err != nil {
		return nil, err
	}
	r.baseCtx, r.cancelBase = context.WithCancel(context.Background())

	var tlsConfig *tls.Config
	if cfg.SMTP.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("relay: smtp.tls_cert: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s := smtp.NewServer(backend{r})
	s.Domain = r.hostname
	s.TLSConfig = tlsConfig
	s.MaxMessageBytes = cfg.SMTP.MaxMessageBytes
	s.MaxRecipients = cfg.SMTP.MaxRecipients
	s.MaxLineLength = cfg.SMTP.MaxLineLength
	s.ReadTimeout = cfg.SMTP.CommandTimeout
	s.WriteTimeout = cfg.SMTP.CommandTimeout
	s.AllowInsecureAuth = cfg.SMTP.AllowInsecureAuth // the session narrows this to loopback
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	s.ErrorLog = log.New(slogWriter{logger}, "", 0)
	r.server = s

	l, err := net.Listen("tcp", cfg.SMTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("relay: smtp.listen: %w", err)
	}
	r.listeners = append(r.listeners, l)
	if cfg.SMTP.ImplicitTLSListen != "" {
		tl, err := net.Listen("tcp", cfg.SMTP.ImplicitTLSListen)
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("relay: smtp.implicit_tls_listen: %w", err)
		}
		r.listeners = append(r.listeners, tls.NewListener(tl, tlsConfig))
	}
	return r, nil
}

// Addr is the submission listener's address (useful after listening on
// port 0).
func (r *Relay) Addr() net.Addr { return r.listeners[0].Addr() }

// ImplicitTLSAddr is the implicit-TLS listener's address, nil without one.
func (r *Relay) ImplicitTLSAddr() net.Addr {
	if len(r.listeners) < 2 {
		return nil
	}
	return r.listeners[1].Addr()
}

// Ready is closed once Run serves and its workers run.
func (r *Relay) Ready() <-chan struct{} { return r.ready }

// UpstreamReachable connects to the upstream (the secondary if the primary
// fails) and quits; it is the upstream half of /readyz.
func (r *Relay) UpstreamReachable(ctx context.Context) error { return r.ups.reachable(ctx) }

// Run serves the listeners and runs the delivery workers and the sweeper
// until ctx is done, then shuts down in order: stop intake (open sessions
// may finish within smtp.shutdown_timeout), let the workers finish the
// answer in hand within delivery.shutdown_timeout and release the rest,
// stop the sweeper, and return. Run may be called once.
func (r *Relay) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("relay: Run called twice")
	}
	defer r.cancelBase()

	serveErr := make(chan error, len(r.listeners))
	var serving sync.WaitGroup
	for _, l := range r.listeners {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := r.server.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				serveErr <- fmt.Errorf("relay: serve %s: %w", l.Addr(), err)
			}
		}()
	}

	stop, stopWork := context.WithCancel(context.Background())
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	var workers sync.WaitGroup
	for i := range r.cfg.Delivery.Workers {
		w := &worker{r: r, owner: fmt.Sprintf("%s/%d/%s", r.hostname, i, outbox.NewID(time.Now())[20:])}
		w.log = r.log.With("worker", i)
		workers.Add(1)
		go func() {
			defer workers.Done()
			r.guard("delivery", func() { w.run(stop, hard) })
		}()
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		r.guard("sweeper", func() { r.sweep(stop) })
	}()
	close(r.ready)
	r.log.Info("relay running", "smtp", r.Addr().String(), "upstream", r.cfg.Upstream.Addr, "workers", r.cfg.Delivery.Workers)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}

	// Stop intake: no new connections; open sessions may finish.
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.SMTP.ShutdownTimeout)
	if serr := r.server.Shutdown(sctx); serr != nil {
		_ = r.server.Close()
	}
	cancel()
	// A Serve that started after Shutdown would not know of it: closing
	// the listeners ends every Serve.
	for _, l := range r.listeners {
		_ = l.Close()
	}
	r.cancelBase()
	serving.Wait()

	// Let the workers finish the answer in hand; cut them off after the
	// shutdown timeout (they release what they could not finish).
	stopWork()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.cfg.Delivery.ShutdownTimeout):
		cancelHard()
		<-done
	}
	r.log.Info("relay stopped")
	return err
}

// guard runs f, recovering and counting a panic; the goroutine then
// restarts f unless the relay is stopping.
func (r *Relay) guard(site string, f func()) {
	for {
		panicked := func() (p bool) {
			defer func() {
				if v := recover(); v != nil {
					r.panicked(site, v)
					p = true
				}
			}()
			f()
			return false
		}()
		if !panicked || r.baseCtx.Err() != nil {
			return
		}
		time.Sleep(time.Second)
	}
}

func (r *Relay) panicked(site string, v any) {
	r.metrics.Panics.WithLabelValues(site).Inc()
	r.log.Error("relay: panic recovered", "site", site, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// wake tells idle workers a new answer is due.
func (r *Relay) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// sweepBatch is how many answers one store call of the sweeper changes,
// and maxSweepBatches how many calls one sweep makes at most.
const (
	sweepBatch      = 100
	maxSweepBatches = 1000
)

// sweep marks answers queued longer than delay_after as delayed and expires
// answers older than retention_days, every sweep interval.
func (r *Relay) sweep(stop context.Context) {
	t := time.NewTicker(r.cfg.Delivery.SweepInterval)
	defer t.Stop()
	for {
		r.sweepOnce(stop)
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Relay) sweepOnce(ctx context.Context) {
	now := r.clock()
	// MarkDelayed returns the status changes it wrote, which can be fewer
	// than the answers it marked (one already not delivered keeps its
	// status), so the sweep goes on until a batch changes nothing; a bound
	// keeps one sweep from running for ever.
	for range maxSweepBatches {
		events, err := r.store.MarkDelayed(ctx, now.Add(-r.cfg.DelayAfter), sweepBatch)
		if len(events) > 0 {
			r.log.Info("sweeper: answers delayed", "count", len(events), "delay_after", r.cfg.DelayAfter)
		}
		if err != nil {
			if ctx.Err() == nil {
				r.metrics.StoreErrors.WithLabelValues("mark_delayed").Inc()
				r.log.Error("sweeper: mark delayed failed", "err", err)
			}
			break
		}
		if len(events) == 0 {
			break
		}
	}
	for {
		n, err := r.store.Expire(ctx, now.Add(-time.Duration(r.cfg.RetentionDays)*24*time.Hour), sweepBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.metrics.StoreErrors.WithLabelValues("expire").Inc()
				r.log.Error("sweeper: expire failed", "err", err)
			}
			break
		}
		if n < sweepBatch {
			break
		}
	}
}

// slogWriter carries go-smtp's internal error log into the relay's logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("smtp server", "msg", string(p))
	return len(p), nil
}
