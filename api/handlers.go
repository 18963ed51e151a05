package api

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/answer-relay/answer-relay/dsn"
	"github.com/answer-relay/answer-relay/outbox"
)

// OpenAPI is the OpenAPI 3 document of this API, served at
// /api/v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// MaxLimit is the largest page size a list accepts (the stores' maximum).
const MaxLimit = 500

// param returns the unescaped path parameter name (rawPath keeps them
// escaped), or a validation problem naming it.
func param(c echo.Context, name string) (string, error) {
	v, err := url.PathUnescape(c.Param(name))
	if err != nil || v == "" {
		return "", invalid(FieldError{Field: name, In: "path", Detail: "must be a non-empty, correctly escaped path segment"})
	}
	return v, nil
}

func pathEscape(s string) string { return url.PathEscape(s) }

// reply writes v as JSON with the given status. API views change as mail
// moves, so nothing is cached.
func reply(c echo.Context, status int, v any) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set(echo.HeaderCacheControl, "no-store")
	c.Response().WriteHeader(status)
	return jsonEncode(c.Response(), v)
}

// pastRetention reports whether the details of a are older than
// retention_days, whether or not the sweeper has deleted them yet.
func (s *Server) pastRetention(a *outbox.Answer) bool {
	return s.retention > 0 && !s.clock().Before(a.AcceptedAt.Add(s.retention))
}

// answer loads an answer; retained says details and reports are asked
// for, which answer 410 once past retention.
func (s *Server) answer(c echo.Context, retained bool) (*outbox.Answer, error) {
	id, err := param(c, "id")
	if err != nil {
		return nil, err
	}
	a, err := s.store.Get(c.Request().Context(), id)
	if err != nil {
		return nil, s.storeProblem(c, err, "answer", id)
	}
	if retained && s.pastRetention(a) {
		return nil, s.gone(id)
	}
	return a, nil
}

func (s *Server) getIndicator(c echo.Context) error {
	a, err := s.answer(c, false)
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, s.indicator(a))
}

func (s *Server) getIndicatorByRef(c echo.Context) error {
	ref, err := param(c, "answer_ref")
	if err != nil {
		return err
	}
	a, err := s.store.Lookup(c.Request().Context(), outbox.ByAnswerRef, ref)
	if errors.Is(err, outbox.ErrNotFound) {
		return problemf(http.StatusNotFound, "not-found", "No answer with answer_ref %q.", ref)
	}
	if err != nil {
		return s.storeProblem(c, err, "answer", ref)
	}
	return reply(c, http.StatusOK, s.indicator(a))
}

func (s *Server) getDetails(c echo.Context) error {
	a, err := s.answer(c, true)
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, s.details(a))
}

func (s *Server) getReport(c echo.Context) error {
	a, err := s.answer(c, true)
	if err != nil {
		return err
	}
	main := mainReport(a.Reports)
	if main < 0 {
		return problemf(http.StatusNotFound, "no-report",
			"Answer %q has no delivery report (yet); its status is %q.", a.ID, a.Status)
	}
	v := ReportView{AnswerID: a.ID, Status: a.Status, Label: a.Status.Label(), Links: s.links(a.ID), Reports: []DeliveryReport{}}
	for i := len(a.Reports) - 1; i >= 0; i-- {
		r := a.Reports[i]
		var raw []byte
		if r.RawSize > 0 {
			raw, err = s.store.ReportRaw(c.Request().Context(), a.ID, r.ID)
			switch {
			case errors.Is(err, outbox.ErrNotFound):
				raw = nil // an engine may drop a raw message; the parsed report stands
			case err != nil:
				return s.storeProblem(c, err, "answer", a.ID)
			}
		}
		v.Reports = append(v.Reports, withRaw(parsedReport(r), raw))
	}
	// Reports is newest first, so the report at index main is at
	// len-1-main.
	v.Report = &v.Reports[len(a.Reports)-1-main]
	v.Explanation = explain(a.Reports[main])
	return reply(c, http.StatusOK, v)
}

func (s *Server) postResend(c echo.Context) error {
	a, err := s.answer(c, true)
	if err != nil {
		return err
	}
	after, err := s.store.Resend(c.Request().Context(), a.ID)
	if err != nil {
		return s.storeProblem(c, err, "answer", a.ID)
	}
	return reply(c, http.StatusOK, s.indicator(after))
}

// pageParams reads cursor and limit, adding any invalid one to errs.
func pageParams(c echo.Context, errs *[]FieldError) (cursor string, limit int) {
	cursor = c.QueryParam("cursor")
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			*errs = append(*errs, FieldError{Field: "limit", In: "query", Detail: fmt.Sprintf("must be an integer from 1 to %d", MaxLimit)})
		}
		limit = n
	}
	return cursor, limit
}

// listProblem maps a list error; a store that refuses the cursor says
// ErrInvalid.
func (s *Server) listProblem(c echo.Context, err error) error {
	if errors.Is(err, outbox.ErrInvalid) {
		return invalid(FieldError{Field: "cursor", In: "query", Detail: "is not a cursor this list returned"})
	}
	return s.storeProblem(c, err, "list", "")
}

// page writes one page of a list with its next link (RFC 8288).
func page[T any](s *Server, c echo.Context, items []T, next string) error {
	if items == nil {
		items = []T{}
	}
	l := List[T]{Items: items, NextCursor: next}
	if next != "" {
		q := c.QueryParams()
		q.Set("cursor", next)
		l.Next = s.cfg.BaseURL + c.Request().URL.EscapedPath() + "?" + q.Encode()
		c.Response().Header().Set("Link", "<"+l.Next+`>; rel="next"`)
	}
	return reply(c, http.StatusOK, l)
}

func parseTime(c echo.Context, name string, errs *[]FieldError) time.Time {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		*errs = append(*errs, FieldError{Field: name, In: "query", Detail: "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"})
	}
	return t
}

func (s *Server) getOutbox(c echo.Context) error {
	var errs []FieldError
	f := outbox.Filter{TicketID: c.QueryParam("ticket_id")}
	if v := c.QueryParam("status"); v != "" {
		st, err := outbox.ParseStatus(v)
		if err != nil {
			errs = append(errs, FieldError{Field: "status", In: "query", Detail: "must be one of " + statusList()})
		}
		f.Status = st
	}
	f.AcceptedFrom = parseTime(c, "accepted_from", &errs)
	f.AcceptedTo = parseTime(c, "accepted_to", &errs)
	if !f.AcceptedFrom.IsZero() && !f.AcceptedTo.IsZero() && !f.AcceptedFrom.Before(f.AcceptedTo) {
		errs = append(errs, FieldError{Field: "accepted_to", In: "query", Detail: "must be after accepted_from"})
	}
	f.Cursor, f.Limit = pageParams(c, &errs)
	if len(errs) > 0 {
		return invalid(errs...)
	}
	p, err := s.store.List(c.Request().Context(), f)
	if err != nil {
		return s.listProblem(c, err)
	}
	items := make([]OutboxItem, len(p.Answers))
	for i, a := range p.Answers {
		items[i] = s.outboxItem(a)
	}
	return page(s, c, items, p.Next)
}

func statusList() string {
	s := make([]string, len(outbox.Statuses))
	for i, st := range outbox.Statuses {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

func (s *Server) postReport(c echo.Context) error {
	if s.deps.Ingester == nil {
		return problemf(http.StatusNotImplemented, "not-configured", "Bounce intake is not configured on this relay.")
	}
	body := http.MaxBytesReader(c.Response(), c.Request().Body, MaxReportBody)
	br := bufio.NewReader(body)
	if _, err := br.Peek(1); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge()
		}
		return invalid(FieldError{Field: "body", In: "body", Detail: "must be the raw returned message (RFC 5322), not empty"})
	}
	res, err := s.deps.Ingester.Ingest(c.Request().Context(), br, outbox.SourceAPI)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case errors.Is(err, outbox.ErrDuplicate):
		res.Duplicate = true
	case errors.Is(err, outbox.ErrInvalid):
		return problemf(http.StatusUnprocessableEntity, "unreadable-report", "The message could not be read as a bounce: %v", err)
	case err != nil:
		return s.storeProblem(c, err, "report", "")
	}
	if res.Applied == nil {
		res.Applied = []string{}
	}
	return reply(c, http.StatusOK, res)
}

func tooLarge() error {
	return problemf(http.StatusRequestEntityTooLarge, "too-large", "The message is larger than %d bytes.", MaxReportBody)
}

func (s *Server) getUnmatched(c echo.Context) error {
	var errs []FieldError
	cursor, limit := pageParams(c, &errs)
	if len(errs) > 0 {
		return invalid(errs...)
	}
	us, next, err := s.store.ListUnmatched(c.Request().Context(), cursor, limit)
	if err != nil {
		return s.listProblem(c, err)
	}
	items := make([]ReportParsed, len(us))
	for i, u := range us {
		items[i] = parsedReport(u.Report)
	}
	return page(s, c, items, next)
}

// classNames are the RFC 3463 section 3.1 classes.
var classNames = map[byte]string{'2': "success", '4': "transient", '5': "permanent"}

func (s *Server) getStatusCode(c echo.Context) error {
	code, err := param(c, "code")
	if err != nil {
		return err
	}
	meaning, ok := dsn.StatusText(code)
	if !ok {
		return invalid(FieldError{Field: "code", In: "path",
			Detail: "must be an enhanced status code class.subject.detail (RFC 3463 section 2), class 2, 4 or 5, e.g. 5.1.1"})
	}
	parts := strings.Split(strings.TrimSpace(code), ".")
	subject, _ := strconv.Atoi(parts[1])
	detail, _ := strconv.Atoi(parts[2])
	v := StatusCodeView{
		Code:  fmt.Sprintf("%s.%d.%d", parts[0], subject, detail),
		Class: classNames[parts[0][0]], Meaning: meaning,
	}
	key := fmt.Sprintf("X.%d.%d", subject, detail)
	for _, sc := range dsn.StatusCodes {
		if sc.Code == key {
			v.Reference = sc.Reference
			break
		}
	}
	return reply(c, http.StatusOK, v)
}

// DeadLetterView is one dead-lettered webhook event with its replay link.
type DeadLetterView struct {
	outbox.DeadLetter
	Replay string `json:"replay"`
}

func (s *Server) getDeadLetters(c echo.Context) error {
	var errs []FieldError
	cursor, limit := pageParams(c, &errs)
	if len(errs) > 0 {
		return invalid(errs...)
	}
	ds, next, err := s.store.ListDeadLetters(c.Request().Context(), cursor, limit)
	if err != nil {
		return s.listProblem(c, err)
	}
	items := make([]DeadLetterView, len(ds))
	for i, d := range ds {
		items[i] = DeadLetterView{DeadLetter: d, Replay: s.cfg.BaseURL + BasePath + "/webhooks/dead-letters/" + pathEscape(d.ID) + "/replay"}
	}
	return page(s, c, items, next)
}

func (s *Server) postReplay(c echo.Context) error {
	if s.deps.Replayer == nil {
		return problemf(http.StatusNotImplemented, "not-configured", "Webhooks are not configured on this relay.")
	}
	id, err := param(c, "id")
	if err != nil {
		return err
	}
	if err := s.deps.Replayer.Replay(c.Request().Context(), id); err != nil {
		if endpointRefused(c.Request().Context(), err) {
			s.logger.Warn("api: replay not taken by the endpoint", "id", id, "err", err)
			return problemf(http.StatusBadGateway, "replay-failed",
				"The endpoint did not take the event; the dead letter %q was kept: %v", id, err)
		}
		return s.storeProblem(c, err, "dead letter", id)
	}
	return reply(c, http.StatusAccepted, ReplayResult{ID: id, Replayed: true})
}

// endpointRefused reports whether a replay error is the webhook endpoint's
// doing rather than the store's or the request's (see DeadLetterReplayer).
func endpointRefused(ctx context.Context, err error) bool {
	for _, known := range []error{outbox.ErrNotFound, outbox.ErrIllegalTransition, outbox.ErrUnavailable, outbox.ErrInvalid} {
		if errors.Is(err, known) {
			return false
		}
	}
	return ctx.Err() == nil
}

func (s *Server) getOpenAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", OpenAPI)
}

func (s *Server) getMetrics(c echo.Context) error {
	if s.deps.Gatherer == nil {
		return problemf(http.StatusNotImplemented, "not-configured", "No metrics registry is configured.")
	}
	s.metricsOnce.Do(func() {
		s.metricsHandler = promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{s}})
	})
	s.metricsHandler.ServeHTTP(c.Response(), c.Request())
	return nil
}

// slogPrinter lets promhttp log through the server's logger.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.logger.Warn("api: metrics: " + fmt.Sprint(v...)) }

func (s *Server) getHealthz(c echo.Context) error {
	return reply(c, http.StatusOK, map[string]string{"status": "ok"})
}

// readyChecks are the configured checks, plus a store ping when the store
// can ping and no "store" check was given.
func (s *Server) readyChecks() map[string]ReadyCheck {
	checks := maps.Clone(s.deps.ReadyChecks)
	if checks == nil {
		checks = map[string]ReadyCheck{}
	}
	if _, ok := checks["store"]; !ok {
		if p, ok := s.store.(interface{ Ping(context.Context) error }); ok {
			checks["store"] = p.Ping
		}
	}
	return checks
}

func (s *Server) getReadyz(c echo.Context) error {
	if s.draining.Load() {
		p := problemf(http.StatusServiceUnavailable, "not-ready", "The relay is shutting down.")
		return p
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), ReadyCheckTimeout)
	defer cancel()
	checks := s.readyChecks()
	results := make(map[string]string, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range checks {
		wg.Go(func() {
			res := "ok"
			defer func() {
				if v := recover(); v != nil {
					s.metrics.panics.Inc()
					s.logger.Error("api: panic in ready check", "check", name, "panic", v)
					res = "fail"
				}
				mu.Lock()
				results[name] = res
				mu.Unlock()
			}()
			if err := check(ctx); err != nil {
				s.logger.Warn("api: ready check failed", "check", name, "err", err)
				res = "fail"
			}
		})
	}
	wg.Wait()
	var failed []string
	for name, res := range results {
		if res != "ok" {
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		p := problemf(http.StatusServiceUnavailable, "not-ready", "Not ready: %s unreachable.", strings.Join(failed, ", "))
		p.Checks = results
		return p
	}
	return reply(c, http.StatusOK, map[string]any{"status": "ready", "checks": results})
}
