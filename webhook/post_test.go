package webhook

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// newPoster returns a Dispatcher with only what post needs: no store.
func newPoster(t *testing.T, now time.Time) *Dispatcher {
	t.Helper()
	return &Dispatcher{clock: func() time.Time { return now }, metrics: NewMetrics(nil), client: newClient(2)}
}

func testEndpoint(t *testing.T, url string, secrets ...config.Secret) *endpoint {
	t.Helper()
	c := Defaults()
	c.Endpoints = []EndpointConfig{{Name: "t", URL: url, Secrets: secrets, Timeout: 2 * time.Second}} // generous: a loaded CI machine must not time out a prompt reply
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	eps, err := buildEndpoints(&c)
	if err != nil {
		t.Fatal(err)
	}
	return eps[0]
}

func TestPostClassifies(t *testing.T) {
	cases := []struct {
		name       string
		handler    http.HandlerFunc
		outcome    string
		retryAfter time.Duration
		reason     string // substring of the reason
	}{
		{"200", func(w http.ResponseWriter, r *http.Request) {}, OutcomeSuccess, 0, "HTTP 200"},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, OutcomeSuccess, 0, "HTTP 204"},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, OutcomeRetry, 0, "HTTP 500: boom"},
		{"503 with Retry-After date", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", time.Unix(1_772_442_000+90, 0).UTC().Format(http.TimeFormat))
			w.WriteHeader(503)
		}, OutcomeRetry, 90 * time.Second, "HTTP 503"},
		{"408", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(408) }, OutcomeRetry, 0, "HTTP 408"},
		{"429 with Retry-After seconds", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(429)
		}, OutcomeRetry, 120 * time.Second, "HTTP 429"},
		{"410 disables", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(410) }, OutcomeDisabled, 0, "HTTP 410"},
		{"400 dead-letters", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad payload", 400) }, OutcomeDeadLetter, 0, "HTTP 400: bad payload"},
		{"404 dead-letters", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }, OutcomeDeadLetter, 0, "HTTP 404"},
		{"redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:9/elsewhere", http.StatusTemporaryRedirect)
		}, OutcomeRetry, 0, "HTTP 307"},
		{"slow receiver times out", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, OutcomeRetry, 0, "no reply within 2s"},
		{"huge body is read only in part", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			chunk := strings.Repeat("x", 64<<10)
			for range 160 { // 10 MiB
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}, OutcomeRetry, 0, "HTTP 500: xxxx"},
	}
	now := time.Unix(1_772_442_000, 0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			d := newPoster(t, now)
			ep := testEndpoint(t, srv.URL, testSecret)
			res := d.post(context.Background(), ep, outbox.Event{ID: "01A-1"}, []byte(`{}`), ep.timeout)
			if res.outcome != tc.outcome || res.retryAfter != tc.retryAfter {
				t.Errorf("outcome %q retry-after %s, want %q %s (reason %q)", res.outcome, res.retryAfter, tc.outcome, tc.retryAfter, res.reason)
			}
			if !strings.Contains(res.reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", res.reason, tc.reason)
			}
			if len(res.reason) > 300 {
				t.Errorf("reason is %d bytes long", len(res.reason))
			}
		})
	}
}

func TestPostNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/in?token=s3cret"
	srv.Close() // connection refused from now on
	d := newPoster(t, time.Now())
	ep := testEndpoint(t, url, testSecret)
	res := d.post(context.Background(), ep, outbox.Event{ID: "01A-1"}, []byte(`{}`), ep.timeout)
	if res.outcome != OutcomeRetry {
		t.Fatalf("outcome %q, want retry", res.outcome)
	}
	if strings.Contains(res.reason, "s3cret") {
		t.Errorf("reason %q reveals the URL's query", res.reason)
	}
}

func TestPostCancelledKnowsNothing(t *testing.T) {
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // so the server notices the client going away
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	d := newPoster(t, time.Now())
	ep := testEndpoint(t, srv.URL, testSecret)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if res := d.post(ctx, ep, outbox.Event{ID: "01A-1"}, []byte(`{}`), 5*time.Second); res.outcome != "" {
		t.Errorf("outcome %q after cancel, want none", res.outcome)
	}
}

// TestSignatureRotation checks that a post signed with two secrets verifies
// with either one alone, by the Standard Webhooks library, and carries the
// Standard Webhooks headers.
func TestSignatureRotation(t *testing.T) {
	var got atomic.Pointer[http.Request]
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body.Store(&b)
		got.Store(r)
	}))
	defer srv.Close()
	now := time.Now()
	d := newPoster(t, now)
	ep := testEndpoint(t, srv.URL, testSecret, testSecret2)
	payload := []byte(`{"type":"answer.sent","timestamp":"2026-03-02T09:00:00Z","data":{}}`)
	if res := d.post(context.Background(), ep, outbox.Event{ID: "01A-2"}, payload, ep.timeout); res.outcome != OutcomeSuccess {
		t.Fatalf("post: %+v", res)
	}
	r := got.Load()
	if id := r.Header.Get("webhook-id"); id != "01A-2" {
		t.Errorf("webhook-id %q", id)
	}
	if ts := r.Header.Get("webhook-timestamp"); ts != fmt.Sprint(now.Unix()) {
		t.Errorf("webhook-timestamp %q, want %d", ts, now.Unix())
	}
	if sigs := strings.Fields(r.Header.Get("webhook-signature")); len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") {
		t.Errorf("webhook-signature %q, want two v1 signatures", sigs)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, s := range []string{testSecret, testSecret2} {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(*body.Load(), r.Header); err != nil {
			t.Errorf("verify with one of the secrets: %v", err)
		}
	}
	other, _ := standardwebhooks.NewWebhook("whsec_b3RoZXItc2VjcmV0LW5vdC1jb25maWd1cmVkLWhlcmU=")
	if err := other.Verify(*body.Load(), r.Header); err == nil {
		t.Error("a secret that is not configured verified the post")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	cases := []struct {
		name, in string
		want     time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "30", 30 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"huge is capped at a year", "99999999999", 365 * 24 * time.Hour},
		{"http date", "Mon, 02 Mar 2026 09:02:00 GMT", 2 * time.Minute},
		{"date in the past", "Mon, 02 Mar 2026 08:00:00 GMT", 0},
		{"garbage", "soon", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	d := &Dispatcher{cfg: Defaults()}
	cases := []struct {
		name     string
		attempts int
		base     time.Duration
	}{
		{"first retry", 0, 5 * time.Second},
		{"second", 1, 10 * time.Second},
		{"fifth", 4, 80 * time.Second},
		{"capped", 20, 30 * time.Minute},
		{"no overflow", 1000, 30 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 {
				got := d.backoff(tc.attempts)
				lo, hi := time.Duration(float64(tc.base)*0.8), time.Duration(float64(tc.base)*1.2)
				if got < lo || got > hi {
					t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tc.attempts, got, lo, hi)
				}
			}
		})
	}
}
