package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/smtptest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startServeClock is startServe with the relay's clock in the test's hand.
func startServeClock(t *testing.T, cfg Config, clock func() time.Time) started {
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan started, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler), clock, func(s started) { up <- s }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s")
		}
	})
	select {
	case s := <-up:
		return s
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	return started{}
}

// scrape is one scrape of /metrics: the text as served and its families.
type scrape struct {
	text     []byte
	families map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, api string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return scrape{text: body, families: fams}
}

// value returns the value of the series of name whose labels include the
// given pairs ("k", "v", ...), summed over every such series: a counter's
// or gauge's value, a histogram's sample count. ok is false when the family
// or a matching series is missing.
func (s scrape) value(name string, labels ...string) (v float64, ok bool) {
	f := s.families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
	}
	return v, ok
}

// promtoolCheck runs "promtool check metrics" on a scrape when promtool is
// installed; with CI=true it must be.
func promtoolCheck(t *testing.T, text []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is required when CI=true (Debian package prometheus)")
		}
		t.Log("promtool not installed; skipping promtool check metrics")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestMetricsAfterScriptedRun drives the relay through a known run, then
// scrapes /metrics over HTTP and checks the values: five answers accepted,
// three sent, one rejected upstream for good, one deferred and still
// queued 30 s (by the fake clock) after it was accepted.
func TestMetricsAfterScriptedRun(t *testing.T) {
	upstream := smtptest.Start(t, smtptest.Options{DSN: true})
	secret := newSecret(t)
	rc, url := newReceiver(t, secret)
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	cfg := testConfig(t, upstream.Addr, url, secret)
	st := startServeClock(t, cfg, clock.Now)
	api := st.API.String()

	// Every series exists at zero before any traffic.
	s := scrapeMetrics(t, api)
	for _, name := range []string{"answer_relay_messages_accepted_total", "answer_relay_upstream_attempts_total",
		"answer_relay_bounces_total", "answer_relay_webhook_deliveries_total", "answer_relay_store_errors_total"} {
		if v, ok := s.value(name); !ok || v != 0 {
			t.Errorf("%s before traffic = %v (present %v), want 0", name, v, ok)
		}
	}

	// The script: the local part decides what the upstream does.
	script := []struct{ rcpt, headers string }{
		{"ok-1@example.com", ""},
		{"ok-2@example.com", ""},
		{"ok-3@example.com", ""},
		{"reject-1@example.com", "X-Helpdesk-Ticket-ID: T-9\r\n"},
		{"defer-1@example.com", ""},
	}
	var ids []string
	for _, sc := range script {
		ids = append(ids, submit(t, st.SMTP.String(), sc.rcpt, sc.headers))
	}
	// scheduled x5, sent x3, not_delivered and ticket.reopen for reject-1.
	// The dispatcher acknowledges an event after its POST returned, so
	// the backlog empties a moment after the receiver has the last one.
	var attempts, backlog float64
	var webhooks int
	deadline := time.Now().Add(20 * time.Second)
	for attempts < 5 || webhooks < 10 || backlog != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %v upstream attempts (want 5), %d distinct webhooks (want 10), backlog %v", attempts, webhooks, backlog)
		}
		time.Sleep(20 * time.Millisecond)
		webhooks = rc.distinct()
		s = scrapeMetrics(t, api)
		attempts, _ = s.value("answer_relay_upstream_attempts_total")
		backlog, _ = s.value("answer_relay_webhook_backlog")
	}

	clock.Add(30 * time.Second) // the deferred answer's next try is a minute away
	s = scrapeMetrics(t, api)
	for _, tc := range []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"accepted", "answer_relay_messages_accepted_total", nil, 5},
		{"sessions", "answer_relay_smtp_sessions_total", nil, 5},
		{"nothing refused", "answer_relay_smtp_rejected_total", nil, 0},
		{"queue length", "answer_relay_queue_length", nil, 1},
		{"queue age", "answer_relay_queue_oldest_age_seconds", nil, 30},
		{"attempts sent", "answer_relay_upstream_attempts_total", []string{"result", "sent"}, 3},
		{"attempts permanent", "answer_relay_upstream_attempts_total", []string{"result", "permanent"}, 1},
		{"attempts temporary", "answer_relay_upstream_attempts_total", []string{"result", "temporary"}, 1},
		{"attempts error", "answer_relay_upstream_attempts_total", []string{"result", "error"}, 0},
		{"attempt latency observed", "answer_relay_upstream_attempt_duration_seconds", nil, 5},
		{"store errors", "answer_relay_store_errors_total", nil, 0},
		{"scheduled webhooks", "answer_relay_webhook_deliveries_total", []string{"event", "answer.scheduled", "outcome", "success"}, 5},
		{"sent webhooks", "answer_relay_webhook_deliveries_total", []string{"event", "answer.sent", "outcome", "success"}, 3},
		{"not delivered webhooks", "answer_relay_webhook_deliveries_total", []string{"event", "answer.not_delivered", "outcome", "success"}, 1},
		{"reopen webhooks", "answer_relay_webhook_deliveries_total", []string{"event", "ticket.reopen", "outcome", "success"}, 1},
		{"webhook retries", "answer_relay_webhook_deliveries_total", []string{"outcome", "retry"}, 0},
		{"webhook backlog", "answer_relay_webhook_backlog", nil, 0},
		{"dead letters", "answer_relay_webhook_dead_letters_total", nil, 0},
		{"no bounces", "answer_relay_bounces_total", nil, 0},
		{"unmatched bounces", "answer_relay_bounces_unmatched", nil, 0},
		{"store readable", "answer_relay_store_scrape_errors", nil, 0},
		{"scheduled", "answer_relay_answer_events_total", []string{"event", "answer.scheduled"}, 5},
		{"sent", "answer_relay_answer_events_total", []string{"event", "answer.sent"}, 3},
		{"not delivered", "answer_relay_answer_events_total", []string{"event", "answer.not_delivered"}, 1},
		{"reopened", "answer_relay_answer_events_total", []string{"event", "ticket.reopen"}, 1},
		{"none delayed", "answer_relay_answer_events_total", []string{"event", "answer.delayed"}, 0},
		{"none delivered", "answer_relay_answer_events_total", []string{"event", "answer.delivered"}, 0},
		{"build info", "answer_relay_build_info", []string{"version", version, "goversion", runtime.Version()}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := s.value(tc.metric, tc.labels...)
			if !ok {
				t.Fatalf("%s%v missing from the scrape", tc.metric, tc.labels)
			}
			if got != tc.want {
				t.Errorf("%s%v = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}

	// The statuses the metrics imply, as the API reports them.
	want := map[string][]string{"sent": ids[:3], "not_delivered": ids[3:4], "scheduled": ids[4:5]}
	for status, wantIDs := range want {
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
		}
		if code := apiGet(t, api, "/api/v1/outbox?status="+status, &page); code != http.StatusOK {
			t.Fatalf("outbox?status=%s: %d", status, code)
		}
		var got []string
		for _, a := range page.Items {
			got = append(got, a.ID)
		}
		slices.Sort(got)
		wantSorted := slices.Sorted(slices.Values(wantIDs))
		if !slices.Equal(got, wantSorted) {
			t.Errorf("outbox?status=%s = %v, want %v", status, got, wantSorted)
		}
	}

	promtoolCheck(t, s.text)
}

// dashboardMetric finds the metric names in PromQL.
var dashboardMetric = regexp.MustCompile(`answer_relay_[a-z_]+`)

// TestDashboardQueriesExistingMetrics checks that every metric the Grafana
// dashboard queries is in a scrape of a running relay with every part on
// (relay, bounce listener, webhooks, API).
func TestDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/answer-relay.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	checkDashboardLayout(t, raw)
	var exprs []string
	walkJSON(dash, func(key string, v string) {
		if key == "expr" || key == "query" || key == "definition" {
			exprs = append(exprs, v)
		}
	})
	if len(exprs) < 10 {
		t.Fatalf("only %d queries found in the dashboard", len(exprs))
	}

	upstream := smtptest.Start(t, smtptest.Options{DSN: true})
	secret := newSecret(t)
	_, url := newReceiver(t, secret)
	st := startServe(t, testConfig(t, upstream.Addr, url, secret))
	s := scrapeMetrics(t, st.API.String())
	promtoolCheck(t, s.text)

	queried := map[string]bool{}
	for _, e := range exprs {
		for _, name := range dashboardMetric.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && s.families[base] != nil {
					name = base
				}
			}
			queried[name] = true
		}
	}
	for name := range queried {
		if s.families[name] == nil {
			t.Errorf("the dashboard queries %s, which the relay does not export", name)
		}
	}
	// And the other way: every answer_relay_ family is on the dashboard,
	// so a new metric is not forgotten.
	for name := range s.families {
		if strings.HasPrefix(name, "answer_relay_") && !queried[name] {
			t.Errorf("%s is exported but on no dashboard panel", name)
		}
	}
}

// distinct counts the distinct webhook-ids received: deliveries are at
// least once.
func (rc *receiver) distinct() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	ids := map[string]bool{}
	for _, e := range rc.events {
		ids[e.ID] = true
	}
	return len(ids)
}

// checkDashboardLayout checks what Grafana needs of the panels: unique
// ids, a place on the 24-column grid, and targets on the datasource
// variable with unique refIds.
func checkDashboardLayout(t *testing.T, raw []byte) {
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct {
				H, W, X, Y int
			} `json:"gridPos"`
			Targets []struct {
				RefID      string `json:"refId"`
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || tg.Expr == "" || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target %+v needs a unique refId, an expr and the ${datasource} variable", p.Title, tg)
			}
			refs[tg.RefID] = true
		}
	}
}

// walkJSON calls f for every string value in v with its object key.
func walkJSON(v any, f func(key, value string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok {
				f(k, s)
			} else {
				walkJSON(x, f)
			}
		}
	case []any:
		for _, x := range v {
			walkJSON(x, f)
		}
	}
}
