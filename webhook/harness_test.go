package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/answer-relay/answer-relay/webhook"
)

// secret signs every post of the tests (32 bytes).
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="

// clock is real time plus an offset the test moves forward: the dispatcher's
// timers run in real time, while retry times, claim expiry and max age can
// be jumped over without sleeping.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// backend is a store engine under test.
type backend struct {
	name string
	// open returns a store on a fresh, empty backend, and a function that
	// opens another handle on the same data, as another replica or a
	// restarted process would. The embedded engine's file belongs to one
	// process, so its other handle is the same store while restart is false
	// and, with restart, a reopened file (the old handle is closed).
	open func(t testing.TB, clk outbox.Clock) (outbox.Store, func(restart bool) outbox.Store)
}

var backends = []backend{
	{"embedded", func(t testing.TB, clk outbox.Clock) (outbox.Store, func(bool) outbox.Store) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		open := func() outbox.Store {
			s, err := embedstore.Open(path, embedstore.Options{Clock: clk})
			if err != nil {
				t.Fatalf("embedstore.Open: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
		first := open()
		cur := first
		return first, func(restart bool) outbox.Store {
			if restart {
				_ = cur.Close()
				cur = open()
			}
			return cur
		}
	}},
	{"redis", func(t testing.TB, clk outbox.Clock) (outbox.Store, func(bool) outbox.Store) {
		srv := redistest.Start(t)
		open := func() outbox.Store {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, PoolSize: 32})
			t.Cleanup(func() { _ = c.Close() })
			s, err := redisstore.New(c, redisstore.Options{Clock: clk})
			if err != nil {
				t.Fatalf("redisstore.New: %v", err)
			}
			return s
		}
		return open(), func(bool) outbox.Store { return open() }
	}},
}

// forEachBackend runs f once per store engine.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// testConfig is a configuration with short timeouts and backoff, so the
// tests run in seconds, and one endpoint at url.
func testConfig(url string) webhook.Config {
	c := webhook.Defaults()
	c.URL = url
	c.Secret = secret
	c.Timeout = 500 * time.Millisecond
	c.ClaimTTL = 2 * time.Second
	c.PollInterval = 5 * time.Millisecond
	c.BackoffMin = 20 * time.Millisecond
	c.BackoffMax = 200 * time.Millisecond
	c.Workers = 8
	c.APIBaseURL = "https://relay.example.com"
	return c
}

// running is a dispatcher started by start.
type running struct {
	d      *webhook.Dispatcher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a dispatcher until stop or the end of the test, and fails the
// test if it recovered a panic.
func start(t testing.TB, cfg webhook.Config, st outbox.Store, clk *clock) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := webhook.NewDispatcher(cfg, st, log, reg, clk.Now)
	if err != nil {
		t.Fatalf("NewDispatcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the dispatcher and waits for Run to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() { r.stopOnce(t) })
}

func (r *running) stopOnce(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if n := r.metric(t, "answer_relay_webhook_panics_total", nil); n != 0 {
		t.Errorf("the dispatcher recovered %v panics", n)
	}
}

// metric returns the value of a counter or gauge (a histogram's count)
// whose labels include labels; 0 when there is none.
func (r *running) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// produce makes n answers through the store API. With full, each answer
// goes scheduled → sent → not_delivered (by a failure DSN) and, having a
// ticket, gets ticket.reopen: four events, seq 1 to 4. Otherwise each has
// only answer.scheduled. It returns the answer ids.
func produce(t testing.TB, st outbox.Store, clk *clock, n int, full bool) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		a, err := outbox.NewAnswer(outbox.NewID(clk.Now()), "agent@helpdesk.example", []string{"customer@example.org"}, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		a.SetReferences(fmt.Sprintf("T-%d", i), fmt.Sprintf("A-%d", i))
		if err := st.Accept(ctx, a, strings.NewReader("Subject: answer\r\n\r\nhello\r\n")); err != nil {
			t.Fatalf("Accept: %v", err)
		}
		ids = append(ids, a.ID)
	}
	if !full {
		return ids
	}
	leased := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(leased) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("leased %d of %d answers", len(leased), n)
		}
		ls, err := st.Lease(ctx, "test-worker", n, time.Minute)
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		for _, l := range ls {
			att := outbox.Attempt{StartedAt: clk.Now(), Upstream: "127.0.0.1:25", Outcomes: []outbox.RecipientOutcome{
				{Address: "customer@example.org", Kind: outbox.OutcomeSent, Code: 250, Text: "queued"},
			}}
			if _, err := st.RecordAttempt(ctx, l, att); err != nil {
				t.Fatalf("RecordAttempt: %v", err)
			}
			leased[l.Answer.ID] = true
		}
	}
	for _, id := range ids {
		rep := outbox.Report{ID: "dsn-" + id, ReceivedAt: clk.Now(), Source: outbox.SourceAPI, Kind: "dsn",
			Recipients: []outbox.ReportRecipient{{Address: "customer@example.org", Action: "failed", Status: "5.1.1",
				ReplyCode: 550, Diagnostic: "550 5.1.1 user unknown", Reason: "userunknown", Hard: true}}}
		if _, err := st.RecordReport(ctx, id, rep, []byte("raw bounce")); err != nil {
			t.Fatalf("RecordReport: %v", err)
		}
	}
	return ids
}

// fullTypes are the event types of a full answer by seq.
var fullTypes = []outbox.EventType{outbox.EventScheduled, outbox.EventSent, outbox.EventNotDelivered, outbox.EventTicketReopen}

// call is one request as the receiver saw it.
type call struct {
	ID     string
	Answer string
	Seq    int64
	Type   outbox.EventType
	N      int       // how many requests for this id came before
	At     time.Time // the test clock when it arrived
	Body   webhook.Payload
}

// reply is what the receiver answers a call.
type reply struct {
	Status     int
	RetryAfter string
	// Hold keeps the request open this long before answering, or until
	// the client goes away.
	Hold time.Duration
}

// receiver is a real HTTP server on loopback that verifies every request
// with the Standard Webhooks library and records what came in which order.
type receiver struct {
	t       testing.TB
	clk     *clock
	wh      *standardwebhooks.Webhook
	respond atomic.Pointer[func(call) reply]
	// lax skips the order check at arrival, for tests where the relay
	// gives up on an event the receiver never took.
	lax atomic.Bool

	addr string
	srv  *http.Server

	mu        sync.Mutex
	calls     []call
	perID     map[string]int
	delivered map[string]int   // 2xx answered (and received) per id
	settled   map[string]int64 // per answer: highest seq answered for good (2xx or 4xx other than 408, 429)
	inflight  map[string]int   // requests of one id open now
	open      map[string][]context.Context
	problems  []string            // bad signatures, overlaps, order violations
	arrived   chan struct{}       // signalled on every request
	order     map[string][]string // per answer: ids answered 2xx, in order
}

// newReceiver starts a receiver answering 200 unless told otherwise.
func newReceiver(t testing.TB, clk *clock) *receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, clk: clk, wh: wh, perID: map[string]int{}, delivered: map[string]int{},
		settled: map[string]int64{}, inflight: map[string]int{}, open: map[string][]context.Context{}, arrived: make(chan struct{}, 1024), order: map[string][]string{}}
	r.setReply(func(call) reply { return reply{Status: 200} })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(func() {
		r.down()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.problems {
			t.Error("receiver: " + p)
		}
	})
	return r
}

func (r *receiver) URL() string { return "http://" + r.addr + "/hooks/answer-relay" }

func (r *receiver) setReply(f func(call) reply) { r.respond.Store(&f) }

func (r *receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle), ReadHeaderTimeout: 5 * time.Second}
	r.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

// down stops the receiver: connections are refused until up.
func (r *receiver) down() {
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// up starts the receiver again on the same address.
func (r *receiver) up() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("receiver up: %v", err)
	}
	r.serve(ln)
}

func (r *receiver) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	// The library checks the signature; the timestamp is checked against
	// the test's clock, which the tests move ahead of real time.
	if err := r.wh.VerifyIgnoringTimestamp(body, req.Header); err != nil {
		r.problem("bad signature on %s: %v", req.Header.Get("webhook-id"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if ts, err := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64); err != nil || absDuration(r.clk.Now().Sub(time.Unix(ts, 0))) > 5*time.Minute {
		r.problem("webhook-timestamp %q is not now", req.Header.Get("webhook-timestamp"))
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.problem("bad body %q: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	if p.Data.EventID != id || id != outbox.EventID(p.Data.AnswerID, p.Data.Seq) || p.Data.Version != 1 {
		r.problem("webhook-id %q, data %+v", id, p.Data)
	}
	if p.Type == outbox.EventTicketReopen && p.Data.Note != outbox.ReopenNote {
		r.problem("ticket.reopen %s with note %q", id, p.Data.Note)
	}
	c := call{ID: id, Answer: p.Data.AnswerID, Seq: p.Data.Seq, Type: p.Type, At: r.clk.Now(), Body: p}

	r.mu.Lock()
	c.N = r.perID[id]
	r.perID[id]++
	r.inflight[id]++
	// An earlier request whose client has gone (a timeout) may still be
	// winding down here; only one whose client still waits is an overlap.
	for _, other := range r.open[id] {
		if other.Err() == nil {
			r.problems = append(r.problems, fmt.Sprintf("%s posted twice at the same time", id))
		}
	}
	r.open[id] = append(r.open[id], req.Context())
	if s := r.settled[c.Answer]; c.Seq > s+1 && !r.lax.Load() {
		r.problems = append(r.problems, fmt.Sprintf("%s arrived while seq %d of its answer was not settled", id, s+1))
	}
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	defer func() {
		r.mu.Lock()
		r.inflight[id]--
		r.open[id] = slices.DeleteFunc(r.open[id], func(c context.Context) bool { return c == req.Context() })
		r.mu.Unlock()
	}()

	rep := (*r.respond.Load())(c)
	if rep.Hold > 0 {
		select {
		case <-req.Context().Done():
			return // the client went away: nothing was answered
		case <-time.After(rep.Hold):
		}
	}
	if req.Context().Err() != nil {
		return
	}
	r.mu.Lock()
	if rep.Status/100 == 2 {
		r.delivered[id]++
		if r.delivered[id] == 1 {
			r.order[c.Answer] = append(r.order[c.Answer], id)
		}
	}
	if rep.Status/100 == 2 || rep.Status/100 == 4 && rep.Status != 408 && rep.Status != 429 {
		r.settled[c.Answer] = max(r.settled[c.Answer], c.Seq)
	}
	r.mu.Unlock()
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	w.WriteHeader(rep.Status)
}

func absDuration(d time.Duration) time.Duration { return max(d, -d) }

// count returns how many requests came for id.
func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perID[id]
}

// requests returns how many requests came in all.
func (r *receiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// deliveredAll reports whether every event of the answers (seq 1..n) was
// answered 2xx.
func (r *receiver) deliveredAll(ids []string, n int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		for seq := int64(1); seq <= n; seq++ {
			if r.delivered[outbox.EventID(id, seq)] == 0 {
				return false
			}
		}
	}
	return true
}

// checkOrder fails the test unless each answer's events were delivered
// exactly in seq order 1..n with the expected types.
func (r *receiver) checkOrder(t *testing.T, ids []string, types []outbox.EventType) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		var want []string
		for i := range types {
			want = append(want, outbox.EventID(id, int64(i+1)))
		}
		if got := r.order[id]; !slices.Equal(got, want) {
			t.Errorf("answer %s: delivered %v, want %v", id, got, want)
		}
	}
	for _, c := range r.calls {
		if int(c.Seq) <= len(types) && c.Type != types[c.Seq-1] {
			t.Errorf("%s has type %s, want %s", c.ID, c.Type, types[c.Seq-1])
		}
	}
}

// callsOf returns the calls for one event id.
func (r *receiver) callsOf(id string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.ID == id {
			out = append(out, c)
		}
	}
	return out
}

// deadLetters lists every dead letter of the store.
func deadLetters(t *testing.T, st outbox.Store) []outbox.DeadLetter {
	t.Helper()
	var all []outbox.DeadLetter
	cursor := ""
	for {
		page, next, err := st.ListDeadLetters(context.Background(), cursor, 100)
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

// waitBacklogEmpty waits until the store has no undelivered event.
func waitBacklogEmpty(t *testing.T, st outbox.Store) {
	t.Helper()
	waitFor(t, 10*time.Second, "an empty event backlog", func() bool {
		s, err := st.EventStats(context.Background())
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("EventStats: %v", err)
		}
		return s.Pending == 0
	})
}
