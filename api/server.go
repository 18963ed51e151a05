package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/answer-relay/answer-relay/outbox"
)

// BasePath is the prefix of every API endpoint of SPEC section 6.
const BasePath = "/api/v1"

// Limits and timeouts of the HTTP server.
const (
	// MaxReportBody caps POST /reports. A bounce carries at most the
	// returned message; intake keeps only outbox.MaxRawReport of it.
	MaxReportBody = 10 << 20
	// ShutdownTimeout bounds the graceful shutdown of Run.
	ShutdownTimeout = 10 * time.Second
	// ReadyCheckTimeout bounds all readiness checks of one /readyz.
	ReadyCheckTimeout = 3 * time.Second
)

// Store is the part of outbox.Store the API reads and writes. Any
// outbox.Store satisfies it.
type Store interface {
	Get(ctx context.Context, id string) (*outbox.Answer, error)
	Lookup(ctx context.Context, key outbox.LookupKey, value string) (*outbox.Answer, error)
	List(ctx context.Context, f outbox.Filter) (outbox.Page, error)
	ReportRaw(ctx context.Context, answerID, reportID string) ([]byte, error)
	Resend(ctx context.Context, id string) (*outbox.Answer, error)
	ListUnmatched(ctx context.Context, cursor string, limit int) ([]outbox.Unmatched, string, error)
	ListDeadLetters(ctx context.Context, cursor string, limit int) ([]outbox.DeadLetter, string, error)
}

var _ Store = outbox.Store(nil)

// Ingester reads one raw returned bounce and records it (bounce intake,
// wired by cmd/answer-relay). POST /api/v1/reports calls it with the
// request body and outbox.SourceAPI. When it returns nil the report was
// recorded on its answer, kept as unmatched, or recognised as a duplicate
// (IngestResult says which). Errors wrapping outbox.ErrInvalid become 422,
// outbox.ErrDuplicate 200 with duplicate=true, outbox.ErrUnavailable 503.
type Ingester interface {
	Ingest(ctx context.Context, raw io.Reader, source outbox.ReportSource) (IngestResult, error)
}

// IngestResult says what an ingested bounce matched.
type IngestResult struct {
	// Matched is true when the bounce was matched to an answer; false
	// when it was kept as unmatched.
	Matched bool `json:"matched"`
	// AnswerID is the matched answer; empty when unmatched.
	AnswerID string `json:"answer_id,omitempty"`
	// MatchedBy is how it matched: "verp", "envelope_id", "tag_header",
	// "message_id" or "references" (SPEC section 3); empty when unmatched.
	MatchedBy string `json:"matched_by,omitempty"`
	// ReportID is the id the report was recorded under.
	ReportID string `json:"report_id,omitempty"`
	// Kind is the report kind: "dsn", "feedback" or "autoreply".
	Kind string `json:"kind,omitempty"`
	// Applied lists the answer's recipients whose status the report set.
	Applied []string `json:"applied,omitempty"`
	// Status is the answer's status after the report; empty when
	// unmatched.
	Status outbox.Status `json:"status,omitempty"`
	// Duplicate is true when the same bounce was ingested before and
	// nothing changed.
	Duplicate bool `json:"duplicate"`
}

// DeadLetterReplayer posts a dead-lettered webhook event to its endpoint
// again, at once (webhook.Dispatcher.Replay, wired by cmd/answer-relay).
// When it returns nil the endpoint took the event and the dead letter is
// gone. Any failure keeps the dead letter: an unknown id is
// outbox.ErrNotFound (404), an endpoint that cannot take events now
// (unknown, or disabled after a 410) matches outbox.ErrIllegalTransition
// (409), an unreachable store outbox.ErrUnavailable (503), and anything
// else means the endpoint did not take the event (502).
type DeadLetterReplayer interface {
	Replay(ctx context.Context, id string) error
}

// ReadyCheck reports whether a dependency answers; nil means ready.
type ReadyCheck func(ctx context.Context) error

// Deps are what the API needs from the rest of the relay. Store is
// required; a nil Ingester or Replayer makes its endpoint answer 501, a nil
// Gatherer makes /metrics answer 501.
type Deps struct {
	Store    Store
	Ingester Ingester
	Replayer DeadLetterReplayer
	// ReadyChecks are run by /readyz, by name (e.g. "store", "upstream").
	ReadyChecks map[string]ReadyCheck
	// Gatherer is served at /metrics.
	Gatherer prometheus.Gatherer
	// Metrics are the API's own metrics (NewMetrics); nil keeps them
	// unregistered.
	Metrics *Metrics
	// Retention is retention_days as a duration: details and reports of
	// answers accepted longer ago answer 410 Gone. Zero disables the age
	// check (a store's ErrExpired still answers 410).
	Retention time.Duration
	// Clock tells the time; nil is time.Now.
	Clock outbox.Clock
}

// Server is the HTTP API.
type Server struct {
	cfg       Config
	store     Store
	deps      Deps
	logger    *slog.Logger
	creds     []credential
	echo      *echo.Echo
	metrics   *Metrics
	retention time.Duration
	clock     outbox.Clock
	routes    map[string]bool // registered route paths, for metric labels

	metricsOnce    sync.Once
	metricsHandler http.Handler

	draining  atomic.Bool
	addrOnce  sync.Once
	listening chan struct{}
	addr      net.Addr
}

// New checks cfg and returns the API server. It does not listen; see Run
// and Handler.
func New(cfg Config, deps Deps, logger *slog.Logger) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("api: Deps.Store is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	creds, err := parseTokens(cfg.Tokens)
	if err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		logger.Warn("api: no token configured (api.tokens, ANSWER_RELAY_API_TOKENS): every /api/v1 endpoint but openapi.yaml answers 401")
	}
	s := &Server{
		cfg:       cfg,
		store:     deps.Store,
		deps:      deps,
		logger:    logger,
		creds:     creds,
		metrics:   deps.Metrics,
		retention: deps.Retention,
		clock:     deps.Clock,
		listening: make(chan struct{}),
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	s.echo = s.newEcho()
	return s, nil
}

// route is one endpoint: its method, echo path, who may call it (nil:
// anybody) and its handler.
type route struct {
	method, path string
	roles        []Role
	handler      echo.HandlerFunc
}

func (s *Server) table() []route {
	b := BasePath
	return []route{
		{http.MethodGet, b + "/answers/:id", rolesAll, s.getIndicator},
		{http.MethodGet, b + "/answers/by-ref/:answer_ref", rolesAll, s.getIndicatorByRef},
		{http.MethodGet, b + "/answers/:id/details", rolesManage, s.getDetails},
		{http.MethodGet, b + "/answers/:id/report", rolesAll, s.getReport},
		{http.MethodPost, b + "/answers/:id/resend", rolesManage, s.postResend},
		{http.MethodGet, b + "/outbox", rolesManage, s.getOutbox},
		{http.MethodPost, b + "/reports", rolesIngest, s.postReport},
		{http.MethodGet, b + "/reports/unmatched", rolesManage, s.getUnmatched},
		{http.MethodGet, b + "/status-codes/:code", rolesAll, s.getStatusCode},
		{http.MethodGet, b + "/webhooks/dead-letters", rolesManage, s.getDeadLetters},
		{http.MethodPost, b + "/webhooks/dead-letters/:id/replay", rolesManage, s.postReplay},
		{http.MethodGet, b + "/openapi.yaml", rolesPublic, s.getOpenAPI},
		{http.MethodGet, "/metrics", rolesPublic, s.getMetrics},
		{http.MethodGet, "/healthz", rolesPublic, s.getHealthz},
		{http.MethodGet, "/readyz", rolesPublic, s.getReadyz},
	}
}

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Pre(rawPath)
	e.Use(s.observe)
	s.routes = make(map[string]bool)
	for _, r := range s.table() {
		var mw []echo.MiddlewareFunc
		if r.roles != nil {
			mw = append(mw, s.authorize(r.roles))
		}
		e.Add(r.method, r.path, r.handler, mw...)
		s.routes[r.path] = true
		s.metrics.initRoute(r.path)
	}
	s.metrics.initRoute(routeUnmatched)
	return e
}

// rawPath makes echo route on the escaped path, always, so a path
// parameter holding "%2F" (a dead letter id is "<event>/<endpoint>") stays
// one parameter; handlers unescape parameters with param.
func rawPath(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		u := c.Request().URL
		u.RawPath = u.EscapedPath()
		return next(c)
	}
}

// routeUnmatched is the route label of requests that matched no route.
const routeUnmatched = "unmatched"

// observe recovers panics, writes errors as problems, and counts and logs
// every request. It is the outermost middleware after routing.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				s.metrics.panics.Inc()
				s.logger.Error("api: panic in handler", "route", c.Path(), "panic", v)
				err = problemf(http.StatusInternalServerError, "internal", "An internal error occurred; it was logged.")
			}
			if err != nil {
				c.Error(err)
				err = nil
			}
			r := c.Path()
			if !s.routes[r] {
				r = routeUnmatched
			}
			status := c.Response().Status
			s.metrics.requests.WithLabelValues(r, statusClass(status)).Inc()
			s.metrics.duration.WithLabelValues(r).Observe(time.Since(start).Seconds())
			s.logger.Debug("api: request", "method", c.Request().Method, "route", r,
				"status", status, "role", c.Get(ctxRoleKey), "duration", time.Since(start))
		}()
		return next(c)
	}
}

// Handler returns the API as an http.Handler, for tests and for embedding
// in another server.
func (s *Server) Handler() http.Handler { return s.echo }

// Echo returns the underlying echo instance; tests compare its routes
// with the OpenAPI document.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Run listens on Config.Listen and serves until ctx is done, then shuts
// down gracefully: /readyz answers 503 at once, requests in flight get up
// to ShutdownTimeout to finish.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller made; it closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.addrOnce.Do(func() {
		s.addr = ln.Addr()
		close(s.listening)
	})
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.logger.Info("api: listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.metrics.panics.Inc()
				s.logger.Error("api: panic in server", "panic", v)
				errc <- fmt.Errorf("api: panic: %v", v)
			}
		}()
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// Listening is closed once Run or Serve has bound its listener.
func (s *Server) Listening() <-chan struct{} { return s.listening }

// Addr is the bound address once Listening is closed, nil before.
func (s *Server) Addr() net.Addr {
	select {
	case <-s.listening:
		return s.addr
	default:
		return nil
	}
}
