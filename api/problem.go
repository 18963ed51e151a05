package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/answer-relay/answer-relay/outbox"
)

// ContentTypeProblem is the media type of every error body (RFC 9457
// section 3).
const ContentTypeProblem = "application/problem+json"

// ProblemTypePrefix begins the "type" URI of every problem this API
// returns; the rest is a short slug listed in the OpenAPI document
// (components.schemas.Problem) and the README.
const ProblemTypePrefix = "urn:answer-relay:problem:"

// Problem is an RFC 9457 problem details object. It is also an error, so
// handlers return it and the error handler writes it.
type Problem struct {
	// Type identifies the kind of problem: ProblemTypePrefix + a slug
	// such as "not-found" or "gone".
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Instance is the path of the request that failed.
	Instance string `json:"instance,omitempty"`
	// Errors names each invalid field of a validation problem (RFC 9457
	// section 3.2 extension member).
	Errors []FieldError `json:"errors,omitempty"`
	// Checks, on /readyz, names each readiness check and its result.
	Checks map[string]string `json:"checks,omitempty"`
}

// FieldError is one invalid input field.
type FieldError struct {
	// Field is the parameter's name, as in the OpenAPI document.
	Field string `json:"field"`
	// In is where the field is: "path", "query", "header" or "body".
	In     string `json:"in"`
	Detail string `json:"detail"`
}

// Error implements error.
func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// problemf returns a problem of the given status and type slug.
func problemf(status int, slug, format string, args ...any) *Problem {
	return &Problem{
		Type:   ProblemTypePrefix + slug,
		Title:  http.StatusText(status),
		Status: status,
		Detail: fmt.Sprintf(format, args...),
	}
}

// invalid returns a 400 validation problem naming the fields.
func invalid(errs ...FieldError) *Problem {
	p := problemf(http.StatusBadRequest, "invalid-request", "The request has %d invalid field(s); see errors.", len(errs))
	if len(errs) == 1 {
		p.Detail = fmt.Sprintf("Invalid %s parameter %q: %s", errs[0].In, errs[0].Field, errs[0].Detail)
	}
	p.Errors = errs
	return p
}

// storeProblem maps a store (or intake, replay) error to a problem. id is
// the answer, report or dead letter the request named; it goes into the
// detail. Errors that are not the store's own are logged and become a 500
// with a generic detail, so internals never reach the client.
func (s *Server) storeProblem(c echo.Context, err error, what, id string) error {
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		return problemf(http.StatusNotFound, "not-found", "No %s with id %q.", what, id)
	case errors.Is(err, outbox.ErrExpired):
		return s.gone(id)
	case errors.Is(err, outbox.ErrIllegalTransition):
		return problemf(http.StatusConflict, "illegal-transition",
			"The %s %q is not in a state that allows this: %v", what, id, err)
	case errors.Is(err, outbox.ErrInvalid):
		return problemf(http.StatusUnprocessableEntity, "unprocessable", "The input was refused: %v", err)
	case errors.Is(err, outbox.ErrUnavailable):
		s.logger.Warn("api: store unavailable", "route", c.Path(), "id", id, "err", err)
		return problemf(http.StatusServiceUnavailable, "unavailable", "The store is unreachable; try again later.")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return problemf(http.StatusServiceUnavailable, "unavailable", "The request was cancelled or timed out.")
	}
	s.logger.Error("api: unexpected error", "route", c.Path(), "id", id, "err", err)
	return problemf(http.StatusInternalServerError, "internal", "An internal error occurred; it was logged.")
}

// gone is the 410 of an answer whose details were deleted, or are due for
// deletion, after retention_days.
func (s *Server) gone(id string) *Problem {
	return problemf(http.StatusGone, "gone",
		"The details and delivery reports of answer %q were deleted after the retention period of %s (retention_days); they are no longer available.",
		id, retentionText(s.retention))
}

func retentionText(d time.Duration) string {
	days := d.Hours() / 24
	if days == float64(int64(days)) {
		if days == 1 {
			return "1 day"
		}
		return fmt.Sprintf("%d days", int64(days))
	}
	return fmt.Sprintf("%.1f days", days)
}

// handleError is echo's HTTPErrorHandler: every error becomes an RFC 9457
// problem+json body.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var p *Problem
	var he *echo.HTTPError
	switch {
	case errors.As(err, &p):
	case errors.As(err, &he):
		p = problemf(he.Code, httpSlug(he.Code), "%s", echoMessage(he))
		if he.Code == http.StatusNotFound {
			p.Detail = "There is no such endpoint; see /api/v1/openapi.yaml."
		}
	default:
		s.logger.Error("api: unhandled error", "route", c.Path(), "err", err)
		p = problemf(http.StatusInternalServerError, "internal", "An internal error occurred; it was logged.")
	}
	if p.Instance == "" {
		p.Instance = c.Request().URL.EscapedPath()
	}
	writeProblem(c, p)
}

func writeProblem(c echo.Context, p *Problem) {
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(p.Status)
		return
	}
	c.Response().Header().Set(echo.HeaderContentType, ContentTypeProblem)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().WriteHeader(p.Status)
	_ = jsonEncode(c.Response(), p)
}

func echoMessage(he *echo.HTTPError) string {
	if m, ok := he.Message.(string); ok && m != "" {
		return m
	}
	return http.StatusText(he.Code)
}

// httpSlug names the problem type of an error echo raised itself.
func httpSlug(code int) string {
	switch code {
	case http.StatusNotFound:
		return "no-route"
	case http.StatusMethodNotAllowed:
		return "method-not-allowed"
	case http.StatusRequestEntityTooLarge:
		return "too-large"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusBadRequest:
		return "invalid-request"
	}
	return "http-" + fmt.Sprint(code)
}
