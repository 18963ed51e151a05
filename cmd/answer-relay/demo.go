package main

// answer-relay demo: the whole relay in one process with everything it
// talks to, so a newcomer sees every status of SPEC section 2 within a
// minute and has a running API to ask about them.
//
// Besides serve (embedded store, loopback ports) the demo runs:
//
//   - a built-in upstream, an SMTP server that decides by the recipient's
//     local part: ok@ accepts, slow@ defers (451 4.2.0) for a while and then
//     accepts, nobody@ rejects (550 5.1.1), bounces@ accepts and later sends
//     an RFC 3464 failure DSN (multipart/report, RFC 6522, with the returned
//     headers of RET=HDRS, RFC 3461 section 4.3) to the VERP address it got
//     as envelope sender, on the relay's bounce listener. A recipient
//     accepted with NOTIFY=SUCCESS (RFC 3461 section 4.1) gets a success DSN
//     the same way, for the delivered status;
//   - a console webhook receiver that verifies the Standard Webhooks
//     signature of every post with the library and prints the event;
//   - the helpdesk: it submits one answer per path with a ticket header.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/webhook"
)

func init() {
	commands["demo"] = command{"try it: the relay with a built-in mail server and webhook receiver; every status in a minute", runDemo}
}

// Fixed names of the demo. The owner token is not a secret: everything
// listens on loopback and lives only as long as the process.
const (
	demoDomain       = "example.test"
	demoBounceDomain = "bounces.demo.test"
	demoHelpdesk     = "helpdesk.demo.test"
	demoUpstreamName = "mail.demo.test"
	demoOwnerToken   = "demo-owner-token"
)

// demoOptions are the demo's knobs; runDemo sets the defaults and the
// tests shorten the timings.
type demoOptions struct {
	// Duration ends the demo after this long; 0 runs until ctx is done.
	Duration time.Duration
	// DataDir keeps the embedded store; empty uses a temporary directory
	// removed at the end.
	DataDir string
	// SMTPListen, APIListen and BounceListen are the preferred addresses;
	// a taken port is replaced by a free one.
	SMTPListen, APIListen, BounceListen string
	// DelayAfter is the relay's delay_after.
	DelayAfter time.Duration
	// SlowFor is how long the upstream defers slow@ after its first
	// attempt; it must exceed DelayAfter so the answer is delayed first.
	SlowFor time.Duration
	// Retry is the relay's retry interval after a 4xx.
	Retry time.Duration
	// ReportAfter is how long after accepting a message the upstream
	// sends its DSN back.
	ReportAfter time.Duration
	// Verbose shows the relay's info log lines on stderr, not only
	// warnings.
	Verbose bool
}

func defaultDemoOptions() demoOptions {
	return demoOptions{
		SMTPListen:   "127.0.0.1:2525",
		APIListen:    "127.0.0.1:8025",
		BounceListen: "127.0.0.1:2526",
		DelayAfter:   20 * time.Second,
		SlowFor:      30 * time.Second,
		Retry:        5 * time.Second,
		ReportAfter:  2 * time.Second,
	}
}

// sweepInterval is how often the demo's relay looks for delayed answers.
func (o demoOptions) sweepInterval() time.Duration {
	return min(time.Second, max(o.DelayAfter/4, 100*time.Millisecond))
}

func (o demoOptions) validate() error {
	switch {
	case o.Duration < 0:
		return errors.New("-duration: must not be negative")
	case o.DelayAfter <= 0 || o.Retry <= 0 || o.ReportAfter < 0:
		return errors.New("demo timings must be positive")
	case o.SlowFor < o.DelayAfter+2*o.sweepInterval():
		return fmt.Errorf("slow@ must be deferred longer than delay_after (%s) to be seen delayed", o.DelayAfter)
	}
	return nil
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := defaultDemoOptions()
	fs := flag.NewFlagSet("answer-relay demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (default: run until Ctrl-C)")
	fs.StringVar(&o.DataDir, "data-dir", "", "keep the embedded store here (default: a temporary directory, removed at the end)")
	fs.DurationVar(&o.DelayAfter, "delay-after", o.DelayAfter, "delay_after of the relay; slow@ is deferred 10s longer")
	fs.BoolVar(&o.Verbose, "v", false, "log what the relay does on stderr, not only warnings")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: answer-relay demo [-duration D] [-data-dir DIR] [-delay-after D] [-v]")
		fmt.Fprintln(stderr, "\nRuns the relay with a built-in upstream mail server and webhook receiver on loopback and")
		fmt.Fprintln(stderr, "submits a few answers, so every delivery status goes by within a minute.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "answer-relay demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.SlowFor = o.DelayAfter + 10*time.Second
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "answer-relay demo: %v\n", err)
		return 2
	}
	if err := demo(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "answer-relay demo: %v\n", err)
		return 1
	}
	return 0
}

// demoPath is one answer the demo's helpdesk submits, and what happens to
// it.
type demoPath struct {
	local  string // local part at demoDomain; the upstream decides by it
	ticket string
	story  string
	expect []outbox.EventType
}

func (p demoPath) rcpt() string { return p.local + "@" + demoDomain }

func demoPaths(o demoOptions) []demoPath {
	return []demoPath{
		{"ok", "T-1001", "accepted, then a success DSN",
			[]outbox.EventType{outbox.EventScheduled, outbox.EventSent, outbox.EventDelivered}},
		{"slow", "T-1002", fmt.Sprintf("451 for %s, then accepted", o.SlowFor),
			[]outbox.EventType{outbox.EventScheduled, outbox.EventDelayed, outbox.EventSent, outbox.EventDelivered}},
		{"nobody", "T-1003", "550 5.1.1: no such user",
			[]outbox.EventType{outbox.EventScheduled, outbox.EventNotDelivered, outbox.EventTicketReopen}},
		{"bounces", "T-1004", "accepted, then a 5.1.1 bounce comes back",
			[]outbox.EventType{outbox.EventScheduled, outbox.EventSent, outbox.EventNotDelivered, outbox.EventTicketReopen}},
	}
}

// demo runs the demo until ctx is done or o.Duration has passed.
func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	dir := o.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "answer-relay-demo-")
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("-data-dir: %w", err)
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	out := &demoPrinter{w: stdout, start: time.Now()}
	paths := demoPaths(o)
	names := &demoNames{m: map[string]string{}}

	// The webhook receiver.
	secret, err := newWebhookSecret()
	if err != nil {
		return err
	}
	rcv, err := newDemoReceiver(secret, out, paths, o.DelayAfter, names)
	if err != nil {
		return err
	}
	whLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
	whSrv := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = whSrv.Serve(whLn) }()
	defer whSrv.Close()
	webhookURL := "http://" + whLn.Addr().String() + "/webhooks"

	// The relay's addresses, known before it starts so the upstream can
	// send its bounces there.
	smtpAddr, err := pickAddr(o.SMTPListen)
	if err != nil {
		return err
	}
	apiAddr, err := pickAddr(o.APIListen)
	if err != nil {
		return err
	}
	bounceAddr, err := pickAddr(o.BounceListen)
	if err != nil {
		return err
	}

	// The upstream.
	up, err := startDemoUpstream(ctx, o, out, bounceAddr, names)
	if err != nil {
		return err
	}
	defer up.close()

	cfg := demoConfig(o, dir, up.addr, smtpAddr, apiAddr, bounceAddr, webhookURL, secret)
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	level := "warn"
	if o.Verbose {
		level = "info"
	}
	logger := newLogger(LogConfig{Format: "text", Level: level}, stderr)

	up1 := make(chan started, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, logger, time.Now, func(s started) { up1 <- s }) }()
	var st started
	select {
	case st = <-up1:
	case err := <-done:
		return err
	}

	out.banner(o, st, up.addr, webhookURL, filepath.Join(dir, "outbox.db"), paths)
	ids := make(map[string]string, len(paths)) // local part → answer id
	for _, p := range paths {
		id, err := demoSubmit(ctx, st.SMTP.String(), p)
		if err != nil {
			out.line("helpdesk", p.ticket, p.rcpt(), "submission failed: %v", err)
			continue
		}
		ids[p.local] = id
		names.set(id, p.rcpt())
		out.line("helpdesk", p.ticket, p.rcpt(), "submitted; the relay says 250 queued as %s", id)
	}

	select {
	case <-rcv.done:
		out.hints(st, ids, time.Since(out.start))
		if o.Duration > 0 {
			out.printf("\nThe demo stops in %s (-duration); try the commands above until then.\n", time.Until(out.start.Add(o.Duration)).Round(time.Second))
		} else {
			out.printf("\nThe demo keeps running; try the commands above. Ctrl-C stops it.\n")
		}
	case <-ctx.Done():
		out.printf("\nStopped before every status was seen; missing: %s\n", strings.Join(rcv.missing(), ", "))
	}
	<-ctx.Done()
	err = <-done
	up.close()
	if o.DataDir == "" {
		out.printf("Demo stopped; its temporary store is removed.\n")
	} else {
		out.printf("Demo stopped; the store stays in %s.\n", dir)
	}
	return err
}

// demoConfig is the serve configuration of the demo.
func demoConfig(o demoOptions, dir, upstream, smtpAddr, apiAddr, bounceAddr, webhookURL, secret string) Config {
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Relay.SMTP.Listen = smtpAddr
	cfg.Relay.SMTP.AllowNetworks = []string{"127.0.0.1/32", "::1/128"}
	cfg.Relay.SMTP.Hostname = "relay.demo.test"
	cfg.Relay.SMTP.ShutdownTimeout = 2 * time.Second
	cfg.Relay.Upstream.Addr = upstream
	cfg.Relay.Upstream.TLS = "none"
	cfg.Relay.Upstream.DialTimeout = 5 * time.Second
	cfg.Relay.Upstream.CommandTimeout = 10 * time.Second
	cfg.Relay.Delivery.RetrySchedule = []string{o.Retry.String()}
	cfg.Relay.Delivery.NotifySuccess = true
	cfg.Relay.Delivery.PollInterval = 200 * time.Millisecond
	cfg.Relay.Delivery.SweepInterval = o.sweepInterval()
	cfg.Relay.Delivery.ShutdownTimeout = 5 * time.Second
	cfg.Relay.DelayAfter = o.DelayAfter
	cfg.Bounce.Listen = bounceAddr
	cfg.Bounce.Domain = demoBounceDomain
	cfg.Bounce.Hostname = "relay.demo.test"
	cfg.API.Listen = apiAddr
	cfg.API.BaseURL = "http://" + apiAddr
	cfg.API.Tokens = []config.Secret{demoOwnerToken + ":owner"}
	cfg.Webhook.URL = webhookURL
	cfg.Webhook.Secret = config.Secret(secret)
	cfg.Webhook.Timeout = 5 * time.Second
	cfg.Webhook.BackoffMin = time.Second
	cfg.Webhook.BackoffMax = 5 * time.Second
	return cfg
}

// pickAddr returns preferred if it is free, else a free loopback port.
func pickAddr(preferred string) (string, error) {
	ln, err := net.Listen("tcp", preferred)
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("no free loopback port: %w", err)
		}
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("free port %s: %w", addr, err)
	}
	return addr, nil
}

func newWebhookSecret() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key), nil
}

// demoSubmit sends the answer of one path through the relay, as a helpdesk
// does, and returns the id of the relay's "queued as" reply.
func demoSubmit(ctx context.Context, addr string, p demoPath) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	if err := c.Hello(demoHelpdesk); err != nil {
		return "", err
	}
	if err := c.Mail("agent@"+demoHelpdesk, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(p.rcpt(), nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	now := time.Now()
	fmt.Fprintf(w, "From: Ada Agent <agent@%s>\r\n"+
		"To: <%s>\r\n"+
		"Subject: Re: [%s] Where is my order?\r\n"+
		"Date: %s\r\n"+
		"Message-ID: <%s.%d@%s>\r\n"+
		"X-Helpdesk-Ticket-ID: %s\r\n"+
		"X-Helpdesk-Answer-ID: %s-1\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"\r\n"+
		"Hello,\r\n\r\nyour order left our warehouse this morning.\r\n\r\nAda, for the helpdesk\r\n",
		demoHelpdesk, p.rcpt(), p.ticket, now.Format(time.RFC1123Z), p.ticket, now.UnixNano(), demoHelpdesk, p.ticket, p.ticket)
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	if err := c.Quit(); err != nil {
		return "", err
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("the reply %q has no queued as", resp.StatusText)
	}
	return strings.TrimSpace(id), nil
}

// demoPrinter writes the demo's console, one line at a time, each with the
// time since the demo started.
type demoPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *demoPrinter) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// line prints one thing that happened: when, who saw it, about which
// ticket and recipient, and what.
func (p *demoPrinter) line(who, ticket, rcpt, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "  %+6.1fs  %-8s  %-7s %-22s %s\n", at, who, ticket, rcpt, fmt.Sprintf(format, args...))
}

func (p *demoPrinter) banner(o demoOptions, st started, upstream, webhookURL, db string, paths []demoPath) {
	p.printf(`answer-relay demo: the relay, a mail server and a webhook receiver, all in this process on loopback.

  submission (SMTP)  %-36s no AUTH needed from 127.0.0.1
  HTTP API, metrics  %-36s owner token %q
  bounce listener    %-36s mail for @%s
  upstream (SMTP)    %-36s built in; it decides by recipient
  webhook receiver   %-36s checks every signature
  store              %s (embedded)

delay_after is %s and a deferred answer is retried every %s. The helpdesk submits one answer per path:

`, st.SMTP, "http://"+st.API.String(), demoOwnerToken, st.Bounce, demoBounceDomain, upstream, webhookURL, db, o.DelayAfter, o.Retry)
	for _, pt := range paths {
		var want []string
		for _, e := range pt.expect[1:] {
			want = append(want, strings.TrimPrefix(string(e), "answer."))
		}
		p.printf("  %-7s %-22s %-42s → %s\n", pt.ticket, pt.rcpt(), pt.story, strings.Join(want, ", "))
	}
	p.printf("\n     time  who       ticket  recipient              what\n")
}

// hints points at the API once every status has gone by.
func (p *demoPrinter) hints(st started, ids map[string]string, took time.Duration) {
	api := "http://" + st.API.String()
	auth := "-H 'Authorization: Bearer " + demoOwnerToken + "'"
	var b strings.Builder
	fmt.Fprintf(&b, "\nEvery status went by in %s. Ask the API about them:\n\n", took.Round(100*time.Millisecond))
	if id := ids["bounces"]; id != "" {
		fmt.Fprintf(&b, "  curl -s %s %s/api/v1/answers/%s          # the indicator\n", auth, api, id)
		fmt.Fprintf(&b, "  curl -s %s %s/api/v1/answers/%s/report   # the bounce, raw and parsed\n", auth, api, id)
	}
	if id := ids["slow"]; id != "" {
		fmt.Fprintf(&b, "  curl -s %s %s/api/v1/answers/%s/details  # every attempt and event\n", auth, api, id)
	}
	fmt.Fprintf(&b, "  curl -s %s '%s/api/v1/outbox?status=not_delivered'\n", auth, api)
	fmt.Fprintf(&b, "  curl -s %s %s/api/v1/status-codes/5.1.1\n", auth, api)
	fmt.Fprintf(&b, "  curl -s %s/metrics | grep '^answer_relay_'\n", api)
	fmt.Fprintf(&b, "\nSubmit your own (ok@, slow@, nobody@ or bounces@%s; any other address is accepted):\n\n", demoDomain)
	fmt.Fprintf(&b, "  swaks --server %s --from agent@%s --to nobody@%s --header 'X-Helpdesk-Ticket-ID: T-2001'\n", st.SMTP, demoHelpdesk, demoDomain)
	p.printf("%s", b.String())
}

// demoReceiver is the console webhook receiver: it verifies each post with
// the Standard Webhooks library, prints the event once (deliveries are at
// least once) and closes done when every expected event has arrived.
type demoReceiver struct {
	wh         *standardwebhooks.Webhook
	out        *demoPrinter
	paths      map[string]demoPath // by ticket
	delayAfter time.Duration
	names      *demoNames

	mu   sync.Mutex
	ids  map[string]bool                      // webhook-id seen
	seen map[string]map[outbox.EventType]bool // by ticket
	done chan struct{}
	fin  bool
}

func newDemoReceiver(secret string, out *demoPrinter, paths []demoPath, delayAfter time.Duration, names *demoNames) (*demoReceiver, error) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	r := &demoReceiver{wh: wh, out: out, paths: map[string]demoPath{}, delayAfter: delayAfter, names: names, ids: map[string]bool{},
		seen: map[string]map[outbox.EventType]bool{}, done: make(chan struct{})}
	for _, p := range paths {
		r.paths[p.ticket] = p
		r.seen[p.ticket] = map[outbox.EventType]bool{}
	}
	return r, nil
}

// ServeHTTP implements http.Handler.
func (r *demoReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.out.line("webhook", "", "", "REFUSED a post with a bad signature: %v", err)
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "bad JSON", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)

	r.mu.Lock()
	dup := r.ids[req.Header.Get("webhook-id")]
	r.ids[req.Header.Get("webhook-id")] = true
	r.mu.Unlock()
	if dup {
		return
	}
	d := p.Data
	rcpt := r.names.get(d.AnswerID)
	if pt, ok := r.paths[d.TicketID]; ok && rcpt == "" {
		rcpt = pt.rcpt()
	}
	if rcpt == "" && d.Report != nil {
		rcpt = d.Report.Recipient
	}
	if rcpt == "" {
		rcpt = "answer " + d.AnswerID[:min(len(d.AnswerID), 10)] + "…"
	}
	r.out.line("webhook", d.TicketID, rcpt, "%-21s %s", p.Type, describeEvent(p, r.delayAfter))

	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.seen[d.TicketID]; ok {
		s[p.Type] = true
	}
	if !r.fin && len(r.missingLocked()) == 0 {
		r.fin = true
		close(r.done)
	}
}

// describeEvent is the human part of an event's console line: the label
// agents see and, when a delivery report caused the change, its code and
// reason.
func describeEvent(p webhook.Payload, delayAfter time.Duration) string {
	d := p.Data
	if p.Type == outbox.EventTicketReopen {
		return fmt.Sprintf("note: %q", d.Note)
	}
	s := d.StatusLabel
	if r := d.Report; r != nil && (r.StatusCode != "" || r.Reason != "") {
		s += " (" + strings.TrimSpace(r.StatusCode+" "+r.Reason) + ")"
	} else if d.Status == outbox.StatusDelayed {
		s += fmt.Sprintf(" (queued over %s)", delayAfter)
	}
	return s
}

// missing lists the expected events not seen yet.
func (r *demoReceiver) missing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missingLocked()
}

func (r *demoReceiver) missingLocked() []string {
	var out []string
	for _, p := range r.paths {
		for _, e := range p.expect {
			if !r.seen[p.ticket][e] {
				out = append(out, p.local+"@ "+string(e))
			}
		}
	}
	slices.Sort(out)
	return out
}

// demoNames maps answer ids to their recipient for the console, learnt
// from the submissions and from the upstream's RCPT commands.
type demoNames struct {
	mu sync.Mutex
	m  map[string]string
}

func (n *demoNames) set(id, rcpt string) {
	if id == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m[id] = rcpt
}

func (n *demoNames) get(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[id]
}

// demoUpstream is the built-in upstream mail server. It stands in for the
// existing mail account's server and the Internet behind it.
type demoUpstream struct {
	addr       string
	o          demoOptions
	out        *demoPrinter
	bounceAddr string
	names      *demoNames
	ctx        context.Context
	srv        *smtp.Server
	wg         sync.WaitGroup // DSNs on their way
	closeOnce  sync.Once

	mu    sync.Mutex
	first map[string]time.Time // ENVID and recipient → first RCPT of slow@
}

func startDemoUpstream(ctx context.Context, o demoOptions, out *demoPrinter, bounceAddr string, names *demoNames) (*demoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &demoUpstream{addr: ln.Addr().String(), o: o, out: out, bounceAddr: bounceAddr, names: names, ctx: ctx, first: map[string]time.Time{}}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &demoSession{u: u}, nil }))
	s.Domain = demoUpstreamName
	s.EnableDSN = true // RFC 3461: the relay asks for success and failure reports
	s.MaxMessageBytes = 10 << 20
	s.MaxRecipients = 100
	s.ReadTimeout, s.WriteTimeout = time.Minute, time.Minute
	s.ErrorLog = discardLogger{}
	u.srv = s
	go func() { _ = s.Serve(ln) }()
	return u, nil
}

// close stops the server and waits for the DSNs it is sending.
func (u *demoUpstream) close() {
	u.closeOnce.Do(func() {
		_ = u.srv.Close()
		u.wg.Wait()
	})
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// demoSession is one SMTP session with the built-in upstream.
type demoSession struct {
	u     *demoUpstream
	from  string
	envid string
	rcpts []demoRcpt
}

type demoRcpt struct {
	addr    string
	success bool // NOTIFY=SUCCESS
}

func (s *demoSession) Reset()        { s.from, s.envid, s.rcpts = "", "", nil }
func (s *demoSession) Logout() error { return nil }

func (s *demoSession) Mail(from string, opts *smtp.MailOptions) error {
	s.from = from
	if opts != nil {
		s.envid = opts.EnvelopeID
	}
	return nil
}

func (s *demoSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.u.names.set(s.envid, to) // the relay's ENVID is the answer id
	local, _, _ := strings.Cut(strings.ToLower(to), "@")
	switch local {
	case "nobody":
		s.u.out.line("upstream", "", to, "550 5.1.1 User unknown")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: "<" + to + ">: Recipient address rejected: User unknown in virtual mailbox table"}
	case "slow":
		s.u.mu.Lock()
		key := s.envid + " " + to
		first, ok := s.u.first[key]
		if !ok {
			first = time.Now()
			s.u.first[key] = first
		}
		s.u.mu.Unlock()
		if left := s.u.o.SlowFor - time.Since(first); left > 0 {
			s.u.out.line("upstream", "", to, "451 4.2.0 Mailbox busy, try again later (for %s more)", left.Truncate(time.Second)+time.Second)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Mailbox busy, try again later"}
		}
	}
	r := demoRcpt{addr: to}
	if opts != nil {
		r.success = slices.Contains(opts.Notify, smtp.DSNNotifySuccess)
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

func (s *demoSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	queueID := strings.ToUpper(randomHex(5))
	headers := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		headers = msg[:i+2]
	}
	for _, rc := range s.rcpts {
		local, _, _ := strings.Cut(strings.ToLower(rc.addr), "@")
		s.u.out.line("upstream", "", rc.addr, "250 2.0.0 Ok: queued as %s", queueID)
		switch {
		case local == "bounces":
			s.u.report(dsnFailed, s.from, s.envid, rc.addr, queueID, headers)
		case rc.success:
			s.u.report(dsnDelivered, s.from, s.envid, rc.addr, queueID, headers)
		}
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + queueID}
}

// Kinds of DSN the upstream sends.
const (
	dsnFailed    = "failed"
	dsnDelivered = "delivered"
)

// report sends a DSN about rcpt to the envelope sender (the relay's VERP
// address) on the relay's bounce listener, after ReportAfter, as a remote
// mail server would later on.
func (u *demoUpstream) report(kind, to, envid, rcpt, queueID string, headers []byte) {
	if to == "" {
		return // RFC 3461 section 6.2: no DSN about a message with a null sender
	}
	msg := demoDSN(kind, time.Now(), to, envid, rcpt, queueID, headers)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() {
			if v := recover(); v != nil {
				u.out.line("upstream", "", rcpt, "panic sending a DSN: %v", v)
			}
		}()
		select {
		case <-u.ctx.Done():
			return
		case <-time.After(u.o.ReportAfter):
		}
		what := "a bounce (failure DSN, 5.1.1)"
		if kind == dsnDelivered {
			what = "a success DSN (2.0.0)"
		}
		u.out.line("upstream", "", rcpt, "sends %s to %s", what, to)
		if err := sendDSN(u.ctx, u.bounceAddr, to, msg); err != nil {
			u.out.line("upstream", "", rcpt, "could not send it: %v", err)
		}
	}()
}

func sendDSN(ctx context.Context, addr, to string, msg []byte) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	if err := c.Hello(demoUpstreamName); err != nil {
		return err
	}
	if err := c.SendMail("", []string{to}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// demoDSN writes a delivery status notification as Postfix does: a
// multipart/report (RFC 6522) with a human part, the message/delivery-status
// part of RFC 3464 section 2, and the returned header section
// (text/rfc822-headers, RET=HDRS).
func demoDSN(kind string, now time.Time, to, envid, rcpt, queueID string, headers []byte) []byte {
	boundary := queueID + "." + fmt.Sprint(now.Unix()) + "/" + demoUpstreamName
	var subject, human, action, status, diag string
	switch kind {
	case dsnDelivered:
		subject = "Successful Mail Delivery Report"
		human = "Your message was successfully delivered to the destination(s)\r\n" +
			"listed below. If the message was delivered to mailbox you will\r\n" +
			"receive no further notifications. Otherwise you may still receive\r\n" +
			"notifications of mail delivery errors from other systems.\r\n\r\n" +
			"<" + rcpt + ">: delivery via mx." + demoDomain + "[192.0.2.25]:25: 250 2.0.0 Ok:\r\n    queued as 4Xk2d81Zz0\r\n"
		action, status, diag = "delivered", "2.0.0", "smtp; 250 2.0.0 Ok: queued as 4Xk2d81Zz0"
	default:
		subject = "Undelivered Mail Returned to Sender"
		human = "I'm sorry to have to inform you that your message could not\r\n" +
			"be delivered to one or more recipients. It's attached below.\r\n\r\n" +
			"For further assistance, please send mail to postmaster.\r\n\r\n" +
			"If you do so, please include this problem report. You can\r\n" +
			"delete your own text from the attached returned message.\r\n\r\n" +
			"                   The mail system\r\n\r\n" +
			"<" + rcpt + ">: host mx." + demoDomain + "[192.0.2.25] said: 550 5.1.1\r\n" +
			"    <" + rcpt + ">: Recipient address rejected: User unknown in virtual\r\n" +
			"    mailbox table (in reply to RCPT TO command)\r\n"
		action, status = "failed", "5.1.1"
		diag = "smtp; 550 5.1.1 <" + rcpt + ">: Recipient address rejected: User\r\n    unknown in virtual mailbox table"
	}
	var b bytes.Buffer
	date := now.Format(time.RFC1123Z)
	fmt.Fprintf(&b, "Return-Path: <>\r\n"+
		"Date: %s\r\n"+
		"From: MAILER-DAEMON@%s (Mail Delivery System)\r\n"+
		"Subject: %s\r\n"+
		"To: %s\r\n"+
		"Auto-Submitted: auto-replied\r\n"+
		"Message-Id: <%s.%s@%s>\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n"+
		"Content-Transfer-Encoding: 8bit\r\n"+
		"\r\n"+
		"This is a MIME-encapsulated message.\r\n\r\n",
		date, demoUpstreamName, subject, to, queueID, kind, demoUpstreamName, boundary)
	fmt.Fprintf(&b, "--%s\r\n"+
		"Content-Description: Notification\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n"+
		"This is the mail system at host %s.\r\n\r\n%s\r\n", boundary, demoUpstreamName, human)
	fmt.Fprintf(&b, "--%s\r\n"+
		"Content-Description: Delivery report\r\n"+
		"Content-Type: message/delivery-status\r\n\r\n"+
		"Reporting-MTA: dns; %s\r\n"+
		"X-Postfix-Queue-ID: %s\r\n"+
		"X-Postfix-Sender: rfc822; %s\r\n", boundary, demoUpstreamName, queueID, to)
	if envid != "" {
		fmt.Fprintf(&b, "Original-Envelope-Id: %s\r\n", envid)
	}
	fmt.Fprintf(&b, "Arrival-Date: %s\r\n\r\n"+
		"Final-Recipient: rfc822; %s\r\n"+
		"Original-Recipient: rfc822;%s\r\n"+
		"Action: %s\r\n"+
		"Status: %s\r\n"+
		"Remote-MTA: dns; mx.%s\r\n"+
		"Diagnostic-Code: %s\r\n\r\n", date, rcpt, rcpt, action, status, demoDomain, diag)
	fmt.Fprintf(&b, "--%s\r\n"+
		"Content-Description: Undelivered Message Headers\r\n"+
		"Content-Type: text/rfc822-headers\r\n\r\n", boundary)
	b.Write(headers)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
