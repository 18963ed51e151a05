package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
)

// start is when the fake clock of every test starts.
var start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// retention is retention_days = 30 as the tests configure it.
const retention = 30 * 24 * time.Hour

// Tokens of each role, as configured by newEnv.
var tokens = map[Role]string{
	RoleOwner:   "owner-token-0123456789",
	RoleAdmin:   "admin-token-0123456789",
	RoleAgent:   "agent-token-0123456789",
	RoleService: "service-token-0123456789",
}

// fakeClock is a clock the tests move instead of sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// forEachEngine runs fn once per store engine.
func forEachEngine(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			fn(t, newEnv(t, eng, nil))
		})
	}
}

// env is one API server on a real loopback listener over a real store.
type env struct {
	t        testing.TB
	store    outbox.Store
	clock    *fakeClock
	srv      *Server
	base     string
	registry *prometheus.Registry
	client   *http.Client
}

// newEnv starts an API server; tweak may change its Deps before New.
func newEnv(t testing.TB, eng engine, tweak func(*Deps)) *env {
	t.Helper()
	clock := &fakeClock{now: start}
	store := eng.open(t, clock.Now)
	reg := prometheus.NewRegistry()
	deps := Deps{
		Store:     store,
		Ingester:  &testIngester{store: store},
		Replayer:  storeReplayer{store},
		Gatherer:  reg,
		Metrics:   NewMetrics(reg),
		Retention: retention,
		Clock:     clock.Now,
		ReadyChecks: map[string]ReadyCheck{
			"upstream": func(context.Context) error { return nil },
		},
	}
	if tweak != nil {
		tweak(&deps)
	}
	var cfg Config
	cfg.Listen = "127.0.0.1:0"
	for _, r := range Roles {
		cfg.Tokens = append(cfg.Tokens, config.Secret(tokens[r]+":"+string(r)))
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(cfg, deps, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if n := counterValue(srv.metrics.panics); n != 0 {
			t.Errorf("%v panics recovered", n)
		}
	})
	<-srv.Listening()
	return &env{
		t: t, store: store, clock: clock, srv: srv, registry: reg,
		base:   "http://" + srv.Addr().String(),
		client: &http.Client{Timeout: 10 * time.Second},
	}
}

// response is what do returns: status, headers and body.
type response struct {
	status int
	header http.Header
	body   []byte
}

// problem decodes the body as a problem, failing on another media type.
func (r response) problem(t *testing.T) Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != ContentTypeProblem {
		t.Fatalf("Content-Type %q, want %q; body %s", ct, ContentTypeProblem, r.body)
	}
	var p Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body: %v: %s", err, r.body)
	}
	if p.Status != r.status || p.Title == "" || !strings.HasPrefix(p.Type, ProblemTypePrefix) || p.Instance == "" {
		t.Fatalf("incomplete problem for status %d: %+v", r.status, p)
	}
	return p
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode: %v: %s", err, r.body)
	}
}

// do sends one request with the token of role ("" none, "bad" an unknown
// one).
func (e *env) do(method, path string, role Role, body []byte) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	switch role {
	case "":
	case "bad":
		req.Header.Set("Authorization", "Bearer not-a-configured-token-at-all")
	default:
		req.Header.Set("Authorization", "Bearer "+tokens[role])
	}
	if body != nil {
		req.Header.Set("Content-Type", "message/rfc822")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// accept stores an answer through the real Store API and moves the clock
// one second, so ids and acceptance times are distinct.
func (e *env) accept(ticket, ref string, rcpts ...string) *outbox.Answer {
	e.t.Helper()
	now := e.clock.Now()
	a, err := outbox.NewAnswer(outbox.NewID(now), "agent@helpdesk.example", rcpts, now)
	if err != nil {
		e.t.Fatal(err)
	}
	a.SetReferences(ticket, ref)
	a.Subject = "Re: your question [" + ticket + "]"
	a.MessageID = a.ID + "@helpdesk.example"
	a.Headers = []outbox.Header{
		{Name: "From", Value: "Agent <agent@helpdesk.example>"},
		{Name: "To", Value: strings.Join(rcpts, ", ")},
		{Name: "Subject", Value: a.Subject},
		{Name: "Authorization", Value: "Basic c2VjcmV0LXVzZXI6aHVudGVyMg=="},
		{Name: "X-Auth-Token", Value: "tok-hunter2"},
		{Name: "Received", Value: "from helpdesk (helpdesk [10.0.0.5]) (Authenticated sender: secret-user) by relay with ESMTPSA id 4711"},
		{Name: "X-Helpdesk-Ticket-ID", Value: ticket},
	}
	body := "From: agent@helpdesk.example\r\nSubject: " + a.Subject + "\r\n\r\nHello.\r\n"
	a.Size = int64(len(body))
	if err := e.store.Accept(context.Background(), a, strings.NewReader(body)); err != nil {
		e.t.Fatalf("Accept: %v", err)
	}
	e.clock.Advance(time.Second)
	return a
}

// deliver leases every due answer and records the outcome kind for all
// its pending recipients.
func (e *env) deliver(id string, kind outbox.OutcomeKind) {
	e.t.Helper()
	ctx := context.Background()
	leases, err := e.store.Lease(ctx, "test-worker", 100, time.Minute)
	if err != nil {
		e.t.Fatalf("Lease: %v", err)
	}
	found := false
	for _, l := range leases {
		if l.Answer.ID != id {
			if err := e.store.Release(ctx, l); err != nil {
				e.t.Fatalf("Release: %v", err)
			}
			continue
		}
		found = true
		att := outbox.Attempt{StartedAt: e.clock.Now(), Duration: 1500 * time.Millisecond, Upstream: "smtp.mail-account.example:587"}
		for _, rcpt := range l.Answer.PendingRecipients() {
			o := outbox.RecipientOutcome{Address: rcpt, Kind: kind}
			switch kind {
			case outbox.OutcomeSent:
				o.Code, o.Enhanced, o.Text = 250, "2.0.0", "Ok: queued as 4711"
			case outbox.OutcomeTemporary:
				o.Code, o.Enhanced, o.Text = 451, "4.3.0", "try again later"
				att.NextAttemptAt = e.clock.Now().Add(5 * time.Minute)
			case outbox.OutcomePermanent:
				o.Code, o.Enhanced, o.Text, o.Reason = 550, "5.7.1", "relaying denied", "rejected"
			}
			att.Outcomes = append(att.Outcomes, o)
		}
		if _, err := e.store.RecordAttempt(ctx, l, att); err != nil {
			e.t.Fatalf("RecordAttempt: %v", err)
		}
	}
	if !found {
		e.t.Fatalf("answer %s was not due", id)
	}
	e.clock.Advance(time.Second)
}

// bounce is a raw RFC 3464 DSN about rcpt for an answer with envelope id.
func bounce(envid, rcpt string) []byte {
	return []byte("From: MAILER-DAEMON@mx.customer.example\r\n" +
		"To: agent@helpdesk.example\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mx.customer.example\r\n" +
		"Original-Envelope-Id: " + envid + "\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\n" +
		"Action: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <" + rcpt + ">: user unknown\r\n" +
		"--b--\r\n")
}

// recordBounce records a DSN for an answer through Store.RecordReport.
func (e *env) recordBounce(a *outbox.Answer, reportID string) {
	e.t.Helper()
	raw := bounce(a.EnvelopeID, a.Recipients[0].Address)
	rep := outbox.Report{
		ID: reportID, ReceivedAt: e.clock.Now(), Source: outbox.SourceSMTP, Kind: "dsn",
		ReportingMTA: "mx.customer.example", RawSize: int64(len(raw)),
		Recipients: []outbox.ReportRecipient{{
			Address: a.Recipients[0].Address, Action: "failed", Status: "5.1.1", ReplyCode: 550,
			Diagnostic: "550 5.1.1 user unknown", RemoteMTA: "mx.customer.example", Reason: "userunknown", Hard: true,
		}},
	}
	if _, err := e.store.RecordReport(context.Background(), a.ID, rep, raw); err != nil {
		e.t.Fatalf("RecordReport: %v", err)
	}
	e.clock.Advance(time.Second)
}

// testIngester stands in for bounce intake (package relay): it matches a
// bounce by its Original-Envelope-Id line only, and records it through the
// real store.
type testIngester struct {
	store outbox.Store
}

func (in *testIngester) Ingest(ctx context.Context, raw io.Reader, source outbox.ReportSource) (IngestResult, error) {
	b, err := io.ReadAll(raw)
	if err != nil {
		return IngestResult{}, err
	}
	var envid, rcpt string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Original-Envelope-Id: "); ok {
			envid = v
		}
		if v, ok := strings.CutPrefix(line, "Final-Recipient: rfc822; "); ok {
			rcpt = v
		}
	}
	if rcpt == "" {
		return IngestResult{}, fmt.Errorf("%w: no Final-Recipient", outbox.ErrInvalid)
	}
	rep := outbox.Report{
		ID: fmt.Sprintf("ingest-%x", len(b)) + "-" + envid, ReceivedAt: time.Now(), Source: source, Kind: "dsn",
		RawSize:    int64(len(b)),
		Recipients: []outbox.ReportRecipient{{Address: rcpt, Action: "failed", Status: "5.1.1", ReplyCode: 550, Reason: "userunknown", Hard: true}},
	}
	a, err := in.store.Lookup(ctx, outbox.ByEnvelopeID, envid)
	if errors.Is(err, outbox.ErrNotFound) {
		if err := in.store.RecordUnmatched(ctx, rep, b); err != nil {
			return IngestResult{ReportID: rep.ID, Kind: rep.Kind}, err
		}
		return IngestResult{ReportID: rep.ID, Kind: rep.Kind}, nil
	}
	if err != nil {
		return IngestResult{}, err
	}
	a, err = in.store.RecordReport(ctx, a.ID, rep, b)
	if err != nil {
		return IngestResult{Matched: true, AnswerID: envid, ReportID: rep.ID}, err
	}
	return IngestResult{Matched: true, AnswerID: a.ID, MatchedBy: "envelope_id", ReportID: rep.ID, Kind: rep.Kind, Applied: []string{rcpt}, Status: a.Status}, nil
}

// storeReplayer stands in for the webhook dispatcher's replay: it takes
// the dead letter from the real store.
type storeReplayer struct{ store outbox.Store }

func (r storeReplayer) Replay(ctx context.Context, id string) error {
	_, err := r.store.TakeDeadLetter(ctx, id)
	return err
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
