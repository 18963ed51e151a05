package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Credentials of the relay's own users and API.
const (
	helpdeskUser     = "helpdesk"
	helpdeskPassword = "helpdesk-secret-0123"
	ownerToken       = "e2e-owner-token-0123456789"
	agentToken       = "e2e-agent-token-0123456789"
	webhookSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // base64 of 24 bytes
	delayAfter       = 3 * time.Second
)

// relayProc is answer-relay serve running as its own process.
type relayProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}

	smtp, api, bounce string

	mu  sync.Mutex
	log bytes.Buffer
}

// relayConfig is the YAML configuration of the relay under test: Redis
// store, submission with AUTH after STARTTLS (and without AUTH from
// 127.0.0.2 only), delivery to Postfix with STARTTLS and AUTH asking for
// every DSN, the bounce listener on its own domain, one webhook, and short
// timings so delays show within seconds.
const relayConfig = `
redis_url: %q
delay_after: %s
smtp:
  listen: 127.0.0.1:0
  hostname: relay.e2e.test
  allow_networks: [127.0.0.2/32]
  users: [%q]
  tls_cert: %q
  tls_key: %q
  auth_failure_delay: 10ms
upstream:
  addr: %q
  tls: starttls
  ca_file: %q
  username: %s
  password: %s
  hostname: relay.e2e.test
  dial_timeout: 2s
  command_timeout: 20s
delivery:
  notify_success: true
  retry_schedule: [1s]
  poll_interval: 100ms
  sweep_interval: 200ms
  idle_timeout: 2s
bounce:
  listen: 127.0.0.1:0
  domain: %s
  hostname: bounce-in.e2e.test
api:
  listen: 127.0.0.1:0
  tokens: [%q, %q]
webhook:
  url: %q
  secret: %q
  backoff_min: 200ms
  backoff_max: 1s
log:
  format: json
  level: debug
`

// startRelay writes the configuration and starts bin serve; it returns
// once the relay logs the addresses it listens on, and stops it (SIGTERM,
// then SIGKILL) when the test ends.
func startRelay(t *testing.T, bin, dir, redisURL, upstream, certFile, keyFile, hookURL, userHash string) *relayProc {
	t.Helper()
	cfgFile := filepath.Join(dir, "answer-relay.yaml")
	writeFile(t, cfgFile, fmt.Appendf(nil, relayConfig, redisURL, delayAfter,
		helpdeskUser+":"+userHash, certFile, keyFile,
		upstream, certFile, upstreamUser, upstreamPassword,
		bounceDom, ownerToken+":owner", agentToken+":agent", hookURL, webhookSecret), 0o600)

	r := &relayProc{t: t, done: make(chan struct{})}
	r.cmd = exec.Command(bin, "serve", "-config", cfgFile)
	// The file only: settings from the caller's environment would win
	// over it (flag > env > file).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANSWER_RELAY_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout = io.Discard
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start answer-relay: %v", err)
	}
	up := make(chan map[string]any, 1)
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			r.mu.Lock()
			r.log.Write(line)
			r.log.WriteByte('\n')
			r.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "answer-relay serving" {
				up <- rec
			}
		}
		_ = r.cmd.Wait()
	}()
	t.Cleanup(r.stop)
	select {
	case rec := <-up:
		r.smtp, _ = rec["smtp"].(string)
		r.api, _ = rec["api"].(string)
		r.bounce, _ = rec["bounce"].(string)
	case <-r.done:
		t.Fatalf("answer-relay serve exited before serving:\n%s", r.logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("answer-relay serve did not start within 20s:\n%s", r.logs())
	}
	return r
}

func (r *relayProc) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// stop ends the process with SIGTERM, as an orchestrator does, and checks
// that it shuts down in time and cleanly.
func (r *relayProc) stop() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
		if code := r.cmd.ProcessState.ExitCode(); code != 0 {
			r.t.Errorf("answer-relay serve exited with %d after SIGTERM", code)
		}
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		r.t.Error("answer-relay serve did not stop within 30s of SIGTERM")
	}
	if r.t.Failed() {
		r.t.Logf("answer-relay log:\n%s", r.logs())
	}
}

// get calls the API with a bearer token and decodes the JSON answer into v.
func (r *relayProc) get(t *testing.T, token, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.api+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && len(body) > 0 {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %.300s", path, err, body)
		}
	}
	return resp.StatusCode
}

// indicator is GET /api/v1/answers/{id}.
type indicator struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Label      string `json:"label"`
	TicketID   string `json:"ticket_id"`
	AnswerRef  string `json:"answer_ref"`
	Recipients []struct {
		Address string `json:"address"`
		Status  string `json:"status"`
	} `json:"recipients"`
}

func (r *relayProc) status(t *testing.T, id string) indicator {
	t.Helper()
	var ind indicator
	if code := r.get(t, agentToken, "/api/v1/answers/"+id, &ind); code != http.StatusOK {
		t.Fatalf("GET answer %s: %d", id, code)
	}
	return ind
}

// waitStatus waits until the answer has the status.
func (r *relayProc) waitStatus(t *testing.T, id, want string, within time.Duration) indicator {
	t.Helper()
	var ind indicator
	eventually(t, within, "answer "+id+" "+want, func() bool {
		ind = r.status(t, id)
		return ind.Status == want
	})
	return ind
}

// reportView is GET /api/v1/answers/{id}/report, the parts the tests read.
type reportView struct {
	Status      string `json:"status"`
	Explanation *struct {
		Recipient  string `json:"recipient"`
		Action     string `json:"action"`
		StatusCode string `json:"status_code"`
		Reason     string `json:"reason"`
		Diagnostic string `json:"diagnostic"`
	} `json:"explanation"`
	Report  *deliveryReport  `json:"report"`
	Reports []deliveryReport `json:"reports"`
}

type deliveryReport struct {
	Source       string `json:"source"`
	Kind         string `json:"kind"`
	ReportingMTA string `json:"reporting_mta"`
	Raw          string `json:"raw"`
	Recipients   []struct {
		Address    string `json:"address"`
		Action     string `json:"action"`
		Status     string `json:"status"`
		Diagnostic string `json:"diagnostic"`
		Reason     string `json:"reason"`
		Hard       bool   `json:"hard"`
	} `json:"recipients"`
}

// report returns the answer's delivery report, read with the agent token:
// agents see reports too.
func (r *relayProc) report(t *testing.T, id string) reportView {
	t.Helper()
	var rv reportView
	if code := r.get(t, agentToken, "/api/v1/answers/"+id+"/report", &rv); code != http.StatusOK {
		t.Fatalf("GET report %s: %d", id, code)
	}
	return rv
}

// receiver is the helpdesk's webhook endpoint: it verifies every post with
// the Standard Webhooks library and records what arrived, in order.
type receiver struct {
	t      *testing.T
	wh     *standardwebhooks.Webhook
	mu     sync.Mutex
	events []event
	bad    int
}

// event is one verified webhook post.
type event struct {
	ID   string `json:"-"`
	Type string `json:"type"`
	Data struct {
		AnswerID       string `json:"answer_id"`
		TicketID       string `json:"ticket_id"`
		AnswerRef      string `json:"answer_ref"`
		Seq            int64  `json:"seq"`
		Status         string `json:"status"`
		PreviousStatus string `json:"previous_status"`
		Note           string `json:"note"`
		ReportURL      string `json:"report_url"`
		Report         *struct {
			Recipient  string `json:"recipient"`
			StatusCode string `json:"status_code"`
			Reason     string `json:"reason"`
			Diagnostic string `json:"diagnostic"`
		} `json:"report"`
	} `json:"data"`
}

func newReceiver(t *testing.T) (*receiver, string) {
	wh, err := standardwebhooks.NewWebhook(webhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, wh: wh}
	srv := httptest.NewServer(http.HandlerFunc(rc.serveHTTP))
	t.Cleanup(srv.Close)
	return rc, srv.URL + "/hooks/answer-relay"
}

func (rc *receiver) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := rc.wh.Verify(body, r.Header); err != nil {
		rc.mu.Lock()
		rc.bad++
		rc.mu.Unlock()
		rc.t.Errorf("webhook signature does not verify: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("webhook body: %v: %s", err, body)
	}
	e.ID = r.Header.Get("webhook-id")
	rc.mu.Lock()
	rc.events = append(rc.events, e)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// forAnswer returns the events of one answer in the order they arrived.
func (rc *receiver) forAnswer(id string) []event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []event
	for _, e := range rc.events {
		if e.Data.AnswerID == id {
			out = append(out, e)
		}
	}
	return out
}

// types lists the event types.
func types(es []event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Type
	}
	return out
}

// expectEvents waits until the answer has len(want) events, waits a little
// more for a duplicate or a stray event, and checks that they arrived in
// order, once each, with consecutive sequence numbers from 1.
func (rc *receiver) expectEvents(t *testing.T, id string, want ...string) []event {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("webhooks %v for %s", want, id), func() bool {
		return len(rc.forAnswer(id)) >= len(want)
	})
	time.Sleep(500 * time.Millisecond) // a duplicate or an extra event would arrive now
	got := rc.forAnswer(id)
	if strings.Join(types(got), " ") != strings.Join(want, " ") {
		t.Fatalf("webhooks for %s = %v, want %v", id, types(got), want)
	}
	for i, e := range got {
		if e.Data.Seq != int64(i+1) || e.ID != fmt.Sprintf("%s-%d", id, i+1) {
			t.Errorf("webhook %d (%s): seq %d id %q, want seq %d", i, e.Type, e.Data.Seq, e.ID, i+1)
		}
		if i > 0 && e.Type != "ticket.reopen" && e.Data.PreviousStatus != got[i-1].Data.Status {
			t.Errorf("webhook %d (%s): previous_status %q, the one before said %q", i, e.Type, e.Data.PreviousStatus, got[i-1].Data.Status)
		}
	}
	return got
}
