package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/internal/smtptest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
)

// fakeClock is the time for the store and the relay; tests move it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one relay under test with a real Redis, a real store and a
// scripted upstream.
type env struct {
	t      *testing.T
	clock  *fakeClock
	redis  *redistest.Server
	store  outbox.Store
	up     *smtptest.Server
	relay  *Relay
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	logs   *lockedBuffer
}

// newEnv starts Redis (with AOF) and a store on it; the upstream and the
// relay are started by the test.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clock: newFakeClock()}
	e.redis = redistest.Start(t, redistest.WithAOF())
	e.store = openStore(t, e.redis, e.clock)
	return e
}

func openStore(t *testing.T, rs *redistest.Server, clock *fakeClock) outbox.Store {
	t.Helper()
	var st outbox.Store
	var err error
	if os.Getenv("RELAY_TEST_STORE") == "embedded" {
		// For a quick run without Redis semantics; the tests' default and
		// the one that counts is Redis.
		st, err = embedstore.Open(filepath.Join(t.TempDir(), "outbox.db"), embedstore.Options{Clock: clock.Now})
	} else {
		st, err = redisstore.New(rs.Client(), redisstore.Options{Clock: clock.Now})
	}
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// testConfig is a relay configuration for tests: loopback, plain upstream,
// fast polling, allow-listed loopback clients.
func testConfig(upstreamAddr string) Config {
	cfg := DefaultConfig()
	cfg.SMTP.Listen = "127.0.0.1:0"
	cfg.SMTP.Hostname = "relay.test"
	cfg.SMTP.AllowNetworks = []string{"127.0.0.1/32"}
	cfg.SMTP.AuthFailureDelay = 10 * time.Millisecond
	cfg.SMTP.ShutdownTimeout = 2 * time.Second
	cfg.Upstream.Addr = upstreamAddr
	cfg.Upstream.TLS = TLSNone
	cfg.Upstream.DialTimeout = 2 * time.Second
	cfg.Upstream.CommandTimeout = 5 * time.Second
	cfg.Delivery.Workers = 2
	cfg.Delivery.PollInterval = 20 * time.Millisecond
	cfg.Delivery.SweepInterval = 20 * time.Millisecond
	cfg.Delivery.ShutdownTimeout = 3 * time.Second
	return cfg
}

// startRelay starts a relay on e.store; it is stopped when the test ends.
func (e *env) startRelay(cfg Config) *Relay {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	e.logs = &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := New(cfg, e.store, logger, e.reg, e.clock.Now)
	if err != nil {
		e.t.Fatalf("relay.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.relay, e.cancel, e.done = r, cancel, make(chan error, 1)
	go func() { e.done <- r.Run(ctx) }()
	<-r.Ready()
	e.t.Cleanup(e.stopRelay)
	return r
}

// stopRelay stops the relay and checks it stopped cleanly and recovered
// no panic.
func (e *env) stopRelay() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("relay.Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		e.t.Errorf("relay.Run did not return after shutdown")
	}
	for _, site := range panicSites {
		if n := counterValue(e.relay.metrics.Panics.WithLabelValues(site)); n != 0 {
			e.t.Errorf("%v panics recovered in %s; logs:\n%s", n, site, e.logs)
		}
	}
}

func (e *env) addr() string { return e.relay.Addr().String() }

// waitAnswer polls the store until ok(answer) or the timeout.
func (e *env) waitAnswer(id string, what string, ok func(*outbox.Answer) bool) *outbox.Answer {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var a *outbox.Answer
	for time.Now().Before(deadline) {
		var err error
		a, err = e.store.Get(context.Background(), id)
		if err == nil && ok(a) {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("answer %s: not %s in time; last state %+v\nlogs:\n%s", id, what, a, e.logs)
	return nil
}

// waitStatus waits until the answer has status st and, when attempts > 0,
// at least that many attempts.
func (e *env) waitStatus(id string, st outbox.Status, attempts int) *outbox.Answer {
	e.t.Helper()
	return e.waitAnswer(id, string(st), func(a *outbox.Answer) bool {
		return a.Status == st && len(a.Attempts) >= attempts
	})
}

// message is a small test message with a Message-ID.
func message(extra ...string) string {
	h := "From: agent@helpdesk.test\r\nTo: customer@example.com\r\nSubject: Re: your question\r\nMessage-ID: <m1@helpdesk.test>\r\n"
	for _, x := range extra {
		h += x + "\r\n"
	}
	return h + "\r\nHello,\r\nthe answer is 42.\r\n"
}

// submission is the result of one client transaction.
type submission struct {
	id   string
	text string
	err  error
}

// submit sends one message with go-smtp's client; auth may be nil.
func submit(t *testing.T, addr string, auth sasl.Client, from string, to []string, msg string) submission {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	defer c.Close()
	return submitOn(t, c, auth, from, to, msg, nil)
}

func submitOn(t *testing.T, c *smtp.Client, auth sasl.Client, from string, to []string, msg string, opts *smtp.MailOptions) submission {
	t.Helper()
	if err := c.Hello("client.test"); err != nil {
		return submission{err: err}
	}
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return submission{err: err}
		}
	}
	if err := c.Mail(from, opts); err != nil {
		return submission{err: err}
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return submission{err: err}
		}
	}
	wc, err := c.Data()
	if err != nil {
		return submission{err: err}
	}
	if _, err := io.WriteString(wc, msg); err != nil {
		return submission{err: err}
	}
	resp, err := wc.CloseWithResponse()
	if err != nil {
		return submission{err: err}
	}
	s := submission{text: resp.StatusText}
	if i := strings.Index(resp.StatusText, "queued as "); i >= 0 {
		s.id = resp.StatusText[i+len("queued as "):]
	}
	return s
}

// mustSubmit submits and fails the test unless the relay queued it.
func mustSubmit(t *testing.T, addr string, to []string, msg string) string {
	t.Helper()
	s := submit(t, addr, nil, "agent@helpdesk.test", to, msg)
	if s.err != nil || s.id == "" {
		t.Fatalf("submit: %v (%q)", s.err, s.text)
	}
	return s.id
}

// smtpCode returns the reply code of an SMTP error, 0 for other errors.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// bcryptUser returns a "user:hash" entry.
func bcryptUser(t *testing.T, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h)
}

// writeCert writes a certificate for 127.0.0.1 and returns its files.
func writeCert(t *testing.T) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	_, _, certPEM, keyPEM, err := smtptest.NewCert("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
