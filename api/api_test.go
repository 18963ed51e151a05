package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// TestIndicator checks the indicator's fields, labels and lookups.
func TestIndicator(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		a := e.accept("T-9", "ref/with slash", "ann@customer.example", "bob@customer.example")
		cases := []struct {
			name string
			path string
		}{
			{"by id", "/api/v1/answers/" + a.ID},
			{"by ref", "/api/v1/answers/by-ref/" + url.PathEscape("ref/with slash")},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do("GET", tc.path, RoleAgent, nil)
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				var v Indicator
				r.decode(t, &v)
				if v.ID != a.ID || v.Status != outbox.StatusScheduled || v.Label != "Answer scheduled" ||
					!v.Since.Equal(start) || v.TicketID != "T-9" || v.AnswerRef != "ref/with slash" || len(v.Recipients) != 2 {
					t.Fatalf("indicator %+v", v)
				}
				if v.Recipients[1].Address != "bob@customer.example" || v.Recipients[1].Status != outbox.StatusScheduled {
					t.Fatalf("recipients %+v", v.Recipients)
				}
			})
		}
		e.deliver(a.ID, outbox.OutcomeSent)
		var v Indicator
		e.do("GET", "/api/v1/answers/"+a.ID, RoleAgent, nil).decode(t, &v)
		if v.Status != outbox.StatusSent || v.Label != "Answer sent" || v.Since.Equal(start) {
			t.Fatalf("after delivery: %+v", v)
		}
		r := e.do("GET", "/api/v1/answers/by-ref/unknown", RoleAgent, nil)
		if r.status != 404 || !strings.Contains(r.problem(t).Detail, "answer_ref") {
			t.Fatalf("unknown ref: %d %s", r.status, r.body)
		}
	})
}

// TestDetails checks the outbox view: envelope, headers without
// credentials, attempts with codes and durations, events.
func TestDetails(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		a := e.accept("T-1", "R-1", "ann@customer.example")
		e.deliver(a.ID, outbox.OutcomeTemporary)
		e.clock.Advance(10 * time.Minute)
		e.deliver(a.ID, outbox.OutcomePermanent)
		r := e.do("GET", "/api/v1/answers/"+a.ID+"/details", RoleAdmin, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		for _, secret := range []string{"Authorization", "c2VjcmV0LXVzZXI6aHVudGVyMg", "hunter2", "secret-user", "X-Auth-Token"} {
			if strings.Contains(string(r.body), secret) {
				t.Errorf("details show %q: %s", secret, r.body)
			}
		}
		var d Details
		r.decode(t, &d)
		if d.Envelope.MailFrom != "agent@helpdesk.example" || len(d.Envelope.RcptTo) != 1 || d.Envelope.EnvelopeID != a.ID || d.Size != a.Size || d.Size == 0 {
			t.Fatalf("envelope/size: %+v %d", d.Envelope, d.Size)
		}
		if d.Status != outbox.StatusNotDelivered || d.Label != "Answer not delivered" || d.ExpiresAt == nil || !d.ExpiresAt.Equal(start.Add(retention)) {
			t.Fatalf("status: %+v", d)
		}
		if len(d.Headers) != 5 {
			t.Fatalf("headers %+v", d.Headers)
		}
		if len(d.Attempts) != 2 {
			t.Fatalf("attempts %+v", d.Attempts)
		}
		at := d.Attempts[1]
		if at.Number != 2 || at.Upstream != "smtp.mail-account.example:587" || at.ReplyCode != 550 || at.EnhancedCode != "5.7.1" ||
			at.Text != "relaying denied" || at.DurationSeconds != 1.5 || at.StartedAt.IsZero() || len(at.Outcomes) != 1 {
			t.Fatalf("attempt %+v", at)
		}
		if d.Attempts[0].ReplyCode != 451 || d.Attempts[0].NextAttemptAt == nil {
			t.Fatalf("first attempt %+v", d.Attempts[0])
		}
		var types []string
		for _, ev := range d.Events {
			types = append(types, string(ev.Type))
		}
		if got := strings.Join(types, ","); got != "answer.scheduled,answer.not_delivered,ticket.reopen" {
			t.Fatalf("events %s", got)
		}
		if len(d.Reports) != 1 || d.Reports[0].Kind != "upstream" || d.Reports[0].Recipients[0].StatusMeaning == "" {
			t.Fatalf("reports %+v", d.Reports)
		}
	})
}

// TestReport checks the delivery report: raw and parsed, explained.
func TestReport(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		a := e.accept("T-1", "R-1", "ann@customer.example")
		r := e.do("GET", "/api/v1/answers/"+a.ID+"/report", RoleAgent, nil)
		if r.status != 404 || r.problem(t).Type != ProblemTypePrefix+"no-report" {
			t.Fatalf("no report yet: %d %s", r.status, r.body)
		}
		e.deliver(a.ID, outbox.OutcomeSent)
		e.recordBounce(a, "dsn-1")
		r = e.do("GET", "/api/v1/answers/"+a.ID+"/report", RoleAgent, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var v ReportView
		r.decode(t, &v)
		if v.Status != outbox.StatusNotDelivered || v.Label != "Answer not delivered" || v.Report == nil || len(v.Reports) != 1 {
			t.Fatalf("report view %+v", v)
		}
		if v.Report.Raw != string(bounce(a.EnvelopeID, "ann@customer.example")) || v.Report.RawEncoding != "utf-8" {
			t.Fatalf("raw %q (%s)", v.Report.Raw, v.Report.RawEncoding)
		}
		rr := v.Report.Recipients[0]
		if rr.Action != "failed" || rr.Status != "5.1.1" || rr.StatusMeaning != "Bad destination mailbox address" || rr.Reason != "userunknown" {
			t.Fatalf("parsed %+v", rr)
		}
		if v.Explanation == nil || v.Explanation.StatusCode != "5.1.1" || v.Explanation.Meaning != "Bad destination mailbox address" {
			t.Fatalf("explanation %+v", v.Explanation)
		}
	})
}

// TestRetention moves a fake clock past retention_days: details and report
// answer 410 before the sweeper ran, and after Store.Expire everything is
// gone from the store and still 410.
func TestRetention(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		a := e.accept("T-1", "R-1", "ann@customer.example")
		e.deliver(a.ID, outbox.OutcomeSent)
		e.recordBounce(a, "dsn-1")
		details := "/api/v1/answers/" + a.ID + "/details"
		report := "/api/v1/answers/" + a.ID + "/report"
		indicator := "/api/v1/answers/" + a.ID
		steps := []struct {
			name    string
			advance time.Duration
			expire  bool
			want    map[string]int
		}{
			{"within retention", 0, false, map[string]int{details: 200, report: 200, indicator: 200}},
			{"one second before", retention - 4*time.Second, false, map[string]int{details: 200, report: 200, indicator: 200}},
			{"past retention, not swept", 2 * time.Second, false, map[string]int{details: 410, report: 410, indicator: 200}},
			{"swept", time.Hour, true, map[string]int{details: 410, report: 410, indicator: 410}},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				e.clock.Advance(st.advance)
				if st.expire {
					n, err := e.store.Expire(ctx, e.clock.Now().Add(-retention), 100)
					if err != nil || n != 1 {
						t.Fatalf("Expire: %d, %v", n, err)
					}
				}
				for path, want := range st.want {
					r := e.do("GET", path, RoleOwner, nil)
					if r.status != want {
						t.Fatalf("%s: %d, want %d: %s", path, r.status, want, r.body)
					}
					if want == 410 {
						p := r.problem(t)
						if p.Type != ProblemTypePrefix+"gone" || !strings.Contains(p.Detail, "retention_days") || !strings.Contains(p.Detail, "30 days") || !strings.Contains(p.Detail, a.ID) {
							t.Fatalf("410 problem %+v", p)
						}
					}
				}
			})
		}
		// The data is gone from the store, not only hidden by the API.
		if _, err := e.store.Get(ctx, a.ID); !errors.Is(err, outbox.ErrExpired) {
			t.Errorf("Get after Expire: %v, want ErrExpired", err)
		}
		if _, err := e.store.ReportRaw(ctx, a.ID, "dsn-1"); err == nil {
			t.Errorf("ReportRaw after Expire still returns the bounce")
		}
		if _, err := e.store.Lookup(ctx, outbox.ByAnswerRef, "R-1"); !errors.Is(err, outbox.ErrNotFound) {
			t.Errorf("Lookup after Expire: %v, want ErrNotFound", err)
		}
		if r := e.do("GET", "/api/v1/answers/by-ref/R-1", RoleAgent, nil); r.status != 404 {
			t.Errorf("by-ref after Expire: %d", r.status)
		}
		var l List[OutboxItem]
		e.do("GET", "/api/v1/outbox", RoleOwner, nil).decode(t, &l)
		if len(l.Items) != 0 {
			t.Errorf("outbox after Expire lists %d answers", len(l.Items))
		}
	})
}

// TestPaging walks the outbox list a page at a time, with filters.
func TestPaging(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		var ids []string
		for i := range 7 {
			ids = append(ids, e.accept(fmt.Sprintf("T-%d", i%2), fmt.Sprintf("R-%d", i), "ann@customer.example").ID)
		}
		e.deliver(ids[6], outbox.OutcomeSent)

		var got []string
		path := "/api/v1/outbox?limit=3"
		pages := 0
		for path != "" {
			r := e.do("GET", path, RoleAdmin, nil)
			if r.status != 200 {
				t.Fatalf("%s: %d %s", path, r.status, r.body)
			}
			var l List[OutboxItem]
			r.decode(t, &l)
			for _, it := range l.Items {
				got = append(got, it.ID)
			}
			pages++
			if (l.NextCursor == "") != (r.header.Get("Link") == "") || (l.NextCursor == "") != (l.Next == "") {
				t.Fatalf("next_cursor %q, next %q, Link %q", l.NextCursor, l.Next, r.header.Get("Link"))
			}
			if len(l.Items) > 3 || pages > 4 {
				t.Fatalf("page %d has %d items", pages, len(l.Items))
			}
			path = l.Next
		}
		if want := reverse(ids); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("paged ids\n got %v\nwant %v", got, want)
		}

		filters := []struct {
			name  string
			query string
			want  []string
		}{
			{"status", "status=sent", []string{ids[6]}},
			{"ticket", "ticket_id=T-1", []string{ids[5], ids[3], ids[1]}},
			{"time range", "accepted_from=" + start.Add(2*time.Second).Format(time.RFC3339) + "&accepted_to=" + start.Add(4*time.Second).Format(time.RFC3339), []string{ids[3], ids[2]}},
			{"status and ticket", "status=scheduled&ticket_id=T-0", []string{ids[4], ids[2], ids[0]}},
		}
		for _, f := range filters {
			t.Run(f.name, func(t *testing.T) {
				var l List[OutboxItem]
				r := e.do("GET", "/api/v1/outbox?"+f.query, RoleOwner, nil)
				if r.status != 200 {
					t.Fatalf("%d %s", r.status, r.body)
				}
				r.decode(t, &l)
				var got []string
				for _, it := range l.Items {
					got = append(got, it.ID)
				}
				if strings.Join(got, ",") != strings.Join(f.want, ",") {
					t.Fatalf("got %v, want %v", got, f.want)
				}
			})
		}

		// Dead letters and unmatched bounces page the same way.
		ctx := context.Background()
		for i := range 5 {
			ev := outbox.Event{ID: outbox.EventID(ids[0], int64(i+1)), Type: outbox.EventScheduled, AnswerID: ids[0], Seq: int64(i + 1)}
			d := outbox.DeadLetter{ID: outbox.DeadLetterID(ev.ID, "hook"), Event: ev, Endpoint: "hook", Reason: "HTTP 503", At: e.clock.Now()}
			if err := e.store.AddDeadLetter(ctx, d); err != nil {
				t.Fatal(err)
			}
			rep := outbox.Report{ID: fmt.Sprintf("unmatched-%d", i), ReceivedAt: e.clock.Now(), Source: outbox.SourceSMTP, Kind: "dsn",
				Recipients: []outbox.ReportRecipient{{Address: "x@customer.example", Action: "failed", Status: "5.1.1"}}}
			if err := e.store.RecordUnmatched(ctx, rep, []byte("raw")); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Second)
		}
		for _, list := range []string{"/api/v1/webhooks/dead-letters", "/api/v1/reports/unmatched"} {
			t.Run(list, func(t *testing.T) {
				n, pages := 0, 0
				path := list + "?limit=2"
				for path != "" && pages < 5 {
					r := e.do("GET", path, RoleOwner, nil)
					if r.status != 200 {
						t.Fatalf("%s: %d %s", path, r.status, r.body)
					}
					var l List[map[string]any]
					r.decode(t, &l)
					n += len(l.Items)
					pages++
					path = l.Next
				}
				if n != 5 || pages != 3 {
					t.Fatalf("%d items in %d pages, want 5 in 3", n, pages)
				}
			})
		}
	})
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// TestProblems checks the problem body of each kind of error.
func TestProblems(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		queued := e.accept("T-1", "R-1", "ann@customer.example")
		cases := []struct {
			name         string
			method, path string
			role         Role
			body         []byte
			status       int
			slug         string
			fields       []string // fields named in errors
		}{
			{"unknown answer", "GET", "/api/v1/answers/01HZZZZZZZZZZZZZZZZZZZZZZZ", RoleAgent, nil, 404, "not-found", nil},
			{"unknown answer details", "GET", "/api/v1/answers/nope/details", RoleOwner, nil, 404, "not-found", nil},
			{"malformed status code", "GET", "/api/v1/status-codes/6.1.1", RoleAgent, nil, 400, "invalid-request", []string{"code"}},
			{"malformed status code text", "GET", "/api/v1/status-codes/user-unknown", RoleAgent, nil, 400, "invalid-request", []string{"code"}},
			{"bad limit", "GET", "/api/v1/outbox?limit=0", RoleOwner, nil, 400, "invalid-request", []string{"limit"}},
			{"bad filters", "GET", "/api/v1/outbox?status=lost&accepted_from=yesterday&limit=501", RoleOwner, nil, 400, "invalid-request", []string{"status", "accepted_from", "limit"}},
			// (The embedded store's List takes any cursor as a position, so
			// a bad outbox cursor is not checked here.)
			{"bad dead-letter cursor", "GET", "/api/v1/webhooks/dead-letters?cursor=not-a-cursor", RoleOwner, nil, 400, "invalid-request", []string{"cursor"}},
			{"bad unmatched cursor", "GET", "/api/v1/reports/unmatched?cursor=not-a-cursor", RoleOwner, nil, 400, "invalid-request", []string{"cursor"}},
			{"empty bounce", "POST", "/api/v1/reports", RoleService, []byte{}, 400, "invalid-request", []string{"body"}},
			{"unreadable bounce", "POST", "/api/v1/reports", RoleService, []byte("hello"), 422, "unreadable-report", nil},
			{"nothing to resend", "POST", "/api/v1/answers/" + queued.ID + "/resend", RoleOwner, nil, 409, "illegal-transition", nil},
			{"no route", "GET", "/api/v1/nothing", RoleOwner, nil, 404, "no-route", nil},
			{"wrong method", "DELETE", "/api/v1/outbox", RoleOwner, nil, 405, "method-not-allowed", nil},
			{"no token", "GET", "/api/v1/outbox", "", nil, 401, "unauthorized", nil},
			{"bad token", "GET", "/api/v1/outbox", "bad", nil, 401, "unauthorized", nil},
			{"wrong role", "GET", "/api/v1/outbox", RoleAgent, nil, 403, "forbidden", nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(tc.method, tc.path, tc.role, tc.body)
				if r.status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
				}
				p := r.problem(t)
				if p.Type != ProblemTypePrefix+tc.slug {
					t.Fatalf("type %q, want %q", p.Type, ProblemTypePrefix+tc.slug)
				}
				if p.Detail == "" {
					t.Fatal("no detail")
				}
				if p.Instance != strings.SplitN(tc.path, "?", 2)[0] {
					t.Fatalf("instance %q for %s", p.Instance, tc.path)
				}
				var named []string
				for _, f := range p.Errors {
					if f.In == "" || f.Detail == "" {
						t.Errorf("field error without in/detail: %+v", f)
					}
					named = append(named, f.Field)
				}
				if strings.Join(named, ",") != strings.Join(tc.fields, ",") {
					t.Fatalf("errors name %v, want %v", named, tc.fields)
				}
			})
		}
	})
}

// TestResendReplayIngest covers the writes that succeed.
func TestResendReplayIngest(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		a := e.accept("T-1", "R-1", "ann@customer.example")
		e.deliver(a.ID, outbox.OutcomeSent)

		// Ingest: the bounce matches by envelope id, then again as a
		// duplicate; one for nobody is kept as unmatched.
		raw := bounce(a.EnvelopeID, "ann@customer.example")
		var res IngestResult
		r := e.do("POST", "/api/v1/reports", RoleService, raw)
		r.decode(t, &res)
		if r.status != 200 || !res.Matched || res.AnswerID != a.ID || res.Status != outbox.StatusNotDelivered || res.Duplicate {
			t.Fatalf("ingest: %d %+v", r.status, res)
		}
		r = e.do("POST", "/api/v1/reports", RoleService, raw)
		res = IngestResult{}
		r.decode(t, &res)
		if r.status != 200 || !res.Duplicate {
			t.Fatalf("ingest twice: %d %+v", r.status, res)
		}
		r = e.do("POST", "/api/v1/reports", RoleOwner, bounce("nobody", "zed@customer.example"))
		res = IngestResult{}
		r.decode(t, &res)
		if r.status != 200 || res.Matched {
			t.Fatalf("unmatched ingest: %d %+v", r.status, res)
		}
		if n, _ := e.store.CountUnmatched(ctx); n != 1 {
			t.Fatalf("%d unmatched kept, want 1", n)
		}

		// Resend the not-delivered answer: scheduled again.
		r = e.do("POST", "/api/v1/answers/"+a.ID+"/resend", RoleAdmin, nil)
		var v Indicator
		r.decode(t, &v)
		if r.status != 200 || v.Status != outbox.StatusScheduled || v.Label != "Answer scheduled" {
			t.Fatalf("resend: %d %+v", r.status, v)
		}

		// Replay a dead letter whose id holds a slash: 202, then gone.
		id := outbox.DeadLetterID(outbox.EventID(a.ID, 2), "helpdesk")
		if err := e.store.AddDeadLetter(ctx, outbox.DeadLetter{ID: id, Event: a.Events[0], Endpoint: "helpdesk", Reason: "HTTP 500", At: e.clock.Now()}); err != nil {
			t.Fatal(err)
		}
		var dl List[DeadLetterView]
		e.do("GET", "/api/v1/webhooks/dead-letters", RoleOwner, nil).decode(t, &dl)
		if len(dl.Items) != 1 || dl.Items[0].ID != id {
			t.Fatalf("dead letters %+v", dl)
		}
		replay := dl.Items[0].Replay
		for i, want := range []int{202, 404} {
			r = e.do("POST", replay, RoleOwner, nil)
			if r.status != want {
				t.Fatalf("replay %d: %d, want %d: %s", i, r.status, want, r.body)
			}
		}
	})
}

// TestStatusCodes explains codes in and out of the registry.
func TestStatusCodes(t *testing.T) {
	e := newEnv(t, engines[0], nil)
	cases := []struct {
		code, canonical, class, meaning, ref string
	}{
		{"5.1.1", "5.1.1", "permanent", "Bad destination mailbox address", "RFC 3463"},
		{"4.2.2", "4.2.2", "transient", "Mailbox full", "RFC 3463"},
		{"2.0.0", "2.0.0", "success", "Other undefined status", "RFC 3463"},
		{"5.7.026", "5.7.26", "permanent", "Multiple authentication checks failed", "RFC 7372"},
		{"4.2.99", "4.2.99", "transient", "Persistent transient failure: mailbox status", ""},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			var v StatusCodeView
			r := e.do("GET", "/api/v1/status-codes/"+tc.code, RoleAgent, nil)
			r.decode(t, &v)
			if r.status != 200 || v != (StatusCodeView{Code: tc.canonical, Class: tc.class, Meaning: tc.meaning, Reference: tc.ref}) {
				t.Fatalf("%d %+v", r.status, v)
			}
		})
	}
}

// TestNotConfigured: without intake, replay or a registry the endpoints
// answer 501 with a problem.
func TestNotConfigured(t *testing.T) {
	e := newEnv(t, engines[0], func(d *Deps) { d.Ingester, d.Replayer, d.Gatherer = nil, nil, nil })
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/v1/reports"},
		{"POST", "/api/v1/webhooks/dead-letters/x/replay"},
		{"GET", "/metrics"},
	} {
		r := e.do(c.method, c.path, RoleOwner, []byte("x"))
		if r.status != 501 || r.problem(t).Type != ProblemTypePrefix+"not-configured" {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

// replayFailing is a replayer whose endpoint side fails with err.
type replayFailing struct{ err error }

func (r replayFailing) Replay(context.Context, string) error { return r.err }

// TestReplayFailures: each kind of replay failure has its own status, and
// none is a 500.
func TestReplayFailures(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		typ    string
	}{
		{"unknown dead letter", fmt.Errorf("dead letter x: %w", outbox.ErrNotFound), 404, "not-found"},
		{"endpoint disabled", fmt.Errorf("endpoint: %w", outbox.ErrIllegalTransition), 409, "illegal-transition"},
		{"store down", fmt.Errorf("take: %w", outbox.ErrUnavailable), 503, "unavailable"},
		{"endpoint refused", errors.New("webhook: delivery failed: HTTP 500"), 502, "replay-failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, engines[0], func(d *Deps) { d.Replayer = replayFailing{tt.err} })
			r := e.do("POST", "/api/v1/webhooks/dead-letters/01A-1%2Fdefault/replay", RoleAdmin, nil)
			if r.status != tt.status || r.problem(t).Type != ProblemTypePrefix+tt.typ {
				t.Errorf("%d %s, want %d %s", r.status, r.body, tt.status, tt.typ)
			}
		})
	}
}

// TestTooLarge: a bounce over MaxReportBody is 413.
func TestTooLarge(t *testing.T) {
	e := newEnv(t, engines[0], nil)
	body := []byte(strings.Repeat("x", MaxReportBody+1))
	r := e.do("POST", "/api/v1/reports", RoleService, body)
	if r.status != 413 || r.problem(t).Type != ProblemTypePrefix+"too-large" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// TestReadyz: a failing check makes /readyz 503 naming it; /metrics shows
// the API's own series.
func TestReadyz(t *testing.T) {
	e := newEnv(t, engines[0], func(d *Deps) {
		d.ReadyChecks["upstream"] = func(context.Context) error { return errors.New("connection refused") }
	})
	r := e.do("GET", "/readyz", "", nil)
	p := r.problem(t)
	if r.status != 503 || p.Checks["upstream"] != "fail" || p.Checks["store"] != "ok" || strings.Contains(string(r.body), "refused") {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	e.do("GET", "/api/v1/outbox", "bad", nil)
	r = e.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`answer_relay_api_requests_total{code="5xx",route="/readyz"} 1`,
		`answer_relay_api_auth_failures_total{reason="invalid"} 1`,
		`answer_relay_api_requests_total{code="2xx",route="/api/v1/answers/:id/details"} 0`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestRun listens on Config.Listen, serves, and stops when ctx is done.
func TestRun(t *testing.T) {
	clock := &fakeClock{now: start}
	store := engines[0].open(t, clock.Now)
	cfg := Config{Listen: "127.0.0.1:0"}
	srv, err := New(cfg, Deps{Store: store}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Listening():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not listening")
	}
	resp, err := http.Get("http://" + srv.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(ShutdownTimeout + time.Second):
		t.Fatal("Run did not return")
	}
}

// TestBinaryRaw: a raw bounce that is not UTF-8 comes back as base64.
func TestBinaryRaw(t *testing.T) {
	raw := []byte("Subject: \xff\xfe\r\n\r\nbody")
	d := withRaw(ReportParsed{}, raw)
	if d.RawEncoding != "base64" || d.Raw != base64.StdEncoding.EncodeToString(raw) || d.RawTruncated {
		t.Fatalf("%+v", d)
	}
}
