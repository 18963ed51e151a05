package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/internal/smtptest"
	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const ownerToken = "owner-token-0123456789"

// receiver is a webhook consumer that verifies every signature with the
// Standard Webhooks library and records what arrived, in order.
type receiver struct {
	t      *testing.T
	wh     *standardwebhooks.Webhook
	mu     sync.Mutex
	events []webhookBody
}

type webhookBody struct {
	ID   string `json:"-"`
	Type string `json:"type"`
	Data struct {
		AnswerID string `json:"answer_id"`
		TicketID string `json:"ticket_id"`
		Seq      int64  `json:"seq"`
		Status   string `json:"status"`
		Note     string `json:"note"`
		Report   *struct {
			StatusCode string `json:"status_code"`
			Reason     string `json:"reason"`
		} `json:"report"`
	} `json:"data"`
}

func newReceiver(t *testing.T, secret string) (*receiver, string) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, wh: wh}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := rc.wh.Verify(body, r.Header); err != nil {
			rc.t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var b webhookBody
		if err := json.Unmarshal(body, &b); err != nil {
			rc.t.Errorf("webhook body: %v: %s", err, body)
		}
		b.ID = r.Header.Get("webhook-id")
		rc.mu.Lock()
		rc.events = append(rc.events, b)
		rc.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return rc, srv.URL
}

func (rc *receiver) forAnswer(id string) []webhookBody {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []webhookBody
	for _, e := range rc.events {
		if e.Data.AnswerID == id {
			out = append(out, e)
		}
	}
	return out
}

func newSecret(t *testing.T) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// testConfig is a serve configuration on loopback ports with the embedded
// store in a temporary directory, delivering to upstream.
func testConfig(t *testing.T, upstream, webhookURL, secret string) Config {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Relay.SMTP.Listen = "127.0.0.1:0"
	cfg.Relay.SMTP.AllowNetworks = []string{"127.0.0.1/32"}
	cfg.Relay.SMTP.Hostname = "relay.test"
	cfg.Relay.Upstream.Addr = upstream
	cfg.Relay.Upstream.TLS = "none"
	cfg.Relay.Delivery.PollInterval = 50 * time.Millisecond
	cfg.Bounce.Listen = "127.0.0.1:0"
	cfg.Bounce.Domain = "bounces.test"
	cfg.API.Listen = "127.0.0.1:0"
	cfg.API.Tokens = []config.Secret{ownerToken + ":owner"}
	cfg.Webhook.URL = webhookURL
	cfg.Webhook.Secret = config.Secret(secret)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startServe runs serve on the real clock until the test ends and returns
// its addresses.
func startServe(t *testing.T, cfg Config) started { return startServeClock(t, cfg, time.Now) }

// submit sends one answer through the relay and returns the id from the
// "queued as" reply.
func submit(t *testing.T, addr, rcpt, headers string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("agent@helpdesk.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: agent@helpdesk.test\r\nTo: %s\r\nSubject: Re: your question\r\n%s\r\nHello, here is the answer.\r\n", rcpt, headers)
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		t.Fatalf("250 reply %q does not say queued as", resp.StatusText)
	}
	return strings.TrimSpace(id)
}

func apiGet(t *testing.T, base, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+base+path, nil)
	req.Header.Set("Authorization", "Bearer "+ownerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// eventually polls cond every 50 ms for up to 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The recipient and returned Message-ID of testdata/failed-postfix.eml, a
// real Postfix DSN from the corpus.
const (
	bounceRcpt  = "kijitora@example.co.jp"
	bounceMsgID = "A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp"
)

// TestServeAnswerBouncesAndReopensTicket submits an answer with a ticket
// through the relay to an upstream that accepts it, then delivers the real
// bounce to the bounce listener, rewritten to point at the answer by each
// reference in turn, with the Redis store.
func TestServeAnswerBouncesAndReopensTicket(t *testing.T) {
	raw, err := os.ReadFile("testdata/failed-postfix.eml")
	if err != nil {
		t.Fatal(err)
	}
	// Each case returns the bounce and the address it is sent to.
	tests := []struct {
		name    string
		rewrite func(id, verp string) (msg, rcpt string)
	}{
		{"verp", func(id, verp string) (string, string) {
			return strings.ReplaceAll(string(raw), bounceMsgID, "unrelated@example.net"), verp
		}},
		{"envelope id", func(id, verp string) (string, string) {
			msg := strings.ReplaceAll(string(raw), bounceMsgID, "unrelated@example.net")
			return strings.Replace(msg, "X-Postfix-Queue-ID:", "Original-Envelope-Id: "+id+"\nX-Postfix-Queue-ID:", 1), "postmaster@bounces.test"
		}},
		{"message id", func(id, verp string) (string, string) {
			return string(raw), "postmaster@bounces.test"
		}},
	}
	upstream := smtptest.Start(t, smtptest.Options{DSN: true})
	secret := newSecret(t)
	rc, url := newReceiver(t, secret)
	cfg := testConfig(t, upstream.Addr, url, secret)
	cfg.RedisURL = config.Secret(redistest.Start(t, redistest.WithAOF()).URL())
	st := startServe(t, cfg)

	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ticket := fmt.Sprintf("T-%d", 70+i)
			msgID := fmt.Sprintf("answer-%d@helpdesk.test", i)
			if tt.name == "message id" {
				msgID = bounceMsgID
			}
			id := submit(t, st.SMTP.String(), bounceRcpt, "X-Helpdesk-Ticket-ID: "+ticket+"\r\nX-Helpdesk-Answer-ID: A-1\r\nMessage-ID: <"+msgID+">\r\n")
			checkBounceReopens(t, st, upstream, rc, id, ticket, tt.rewrite)
		})
	}
}

func checkBounceReopens(t *testing.T, st started, upstream *smtptest.Server, rc *receiver, id, ticket string, rewrite func(id, verp string) (string, string)) {
	t.Helper()
	var from string
	eventually(t, "the answer upstream", func() bool {
		for _, m := range upstream.Messages() {
			if strings.Contains(string(m.Data), "X-Answer-Relay-ID: "+id) {
				from = m.From
				if m.MailOpts.EnvelopeID != id {
					t.Errorf("ENVID upstream = %q, want %q", m.MailOpts.EnvelopeID, id)
				}
				return true
			}
		}
		return false
	})
	if want := "bounce+" + id + "@bounces.test"; from != want {
		t.Errorf("envelope sender upstream = %q, want VERP %q", from, want)
	}
	var ind struct {
		Status string `json:"status"`
		Label  string `json:"label"`
	}
	eventually(t, "answer sent", func() bool { apiGet(t, st.API.String(), "/api/v1/answers/"+id, &ind); return ind.Status == "sent" })

	// The recipient's server bounces it hours later.
	msg, rcpt := rewrite(id, from)
	c, err := smtp.Dial(st.Bounce.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("", []string{rcpt}, strings.NewReader(msg)); err != nil {
		t.Fatalf("bounce listener: %v", err)
	}
	c.Close()

	eventually(t, "answer not delivered", func() bool {
		apiGet(t, st.API.String(), "/api/v1/answers/"+id, &ind)
		return ind.Status == "not_delivered"
	})
	if ind.Label != "Answer not delivered" {
		t.Errorf("label %q", ind.Label)
	}
	var report map[string]any
	if code := apiGet(t, st.API.String(), "/api/v1/answers/"+id+"/report", &report); code != http.StatusOK {
		t.Fatalf("report: %d %v", code, report)
	}
	if b, _ := json.Marshal(report); !strings.Contains(string(b), "5.1.1") || !strings.Contains(string(b), "Undelivered Mail Returned to Sender") {
		t.Errorf("report lacks the parsed 5.1.1 or the raw bounce: %.400s", b)
	}

	eventually(t, "four webhooks", func() bool { return len(rc.forAnswer(id)) >= 4 })
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	got := rc.forAnswer(id)
	want := []string{"answer.scheduled", "answer.sent", "answer.not_delivered", "ticket.reopen"}
	if len(got) != len(want) {
		t.Fatalf("webhooks %+v, want %v", got, want)
	}
	for i, e := range got {
		if e.Type != want[i] || e.Data.Seq != int64(i+1) || e.ID == "" {
			t.Errorf("webhook %d = %s seq %d id %q, want %s seq %d", i, e.Type, e.Data.Seq, e.ID, want[i], i+1)
		}
	}
	reopen := got[3].Data
	if reopen.Note != "System reopened ticket because an answer was not delivered" || reopen.TicketID != ticket ||
		reopen.Report == nil || reopen.Report.StatusCode != "5.1.1" {
		t.Errorf("ticket.reopen data = %+v", reopen)
	}
}
