package e2e

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/internal/smtptest"
)

// reopenNote is the system note of SPEC section 1, word for word.
const reopenNote = "System reopened ticket because an answer was not delivered"

// env is everything one run of the suite starts.
type env struct {
	dir      string // certificate, relay configuration, scripts
	cert     string // the CA every client trusts
	relay    *relayProc
	postfix  *postfix
	hooks    *receiver
	sink     *smtptest.Server // slow.test's server: defers every recipient
	relayBin string
}

// TestEndToEnd runs the built relay against a private Postfix, with swaks
// and Python's smtplib as the helpdesk, through the scenarios of issue 9.
// Scenarios 1-3 run side by side; 4 stops Postfix, so it runs alone; 5
// last, on the restarted Postfix.
func TestEndToEnd(t *testing.T) {
	requireTools(t)
	start := time.Now()
	e := setup(t)
	t.Logf("e2e: setup took %s", time.Since(start).Round(time.Millisecond))

	t.Run("postfix", func(t *testing.T) {
		t.Run("1_delivered", e.scenarioDelivered)
		t.Run("2_unknown_user_bounces", e.scenarioUnknownUser)
		t.Run("3_deferred_delay_dsn", e.scenarioDeferred)
	})
	t.Run("4_upstream_down", e.scenarioUpstreamDown)
	t.Run("5_clients", e.scenarioClients)
	t.Logf("e2e: all scenarios took %s", time.Since(start).Round(time.Millisecond))
}

func setup(t *testing.T) *env {
	e := &env{dir: worldDir(t, "answer-relay-e2e-")}
	e.cert = filepath.Join(e.dir, "cert.pem")
	key := filepath.Join(e.dir, "key.pem")
	writeCert(t, e.cert, key)
	e.relayBin = buildRelay(t, e.dir)
	redis := redistest.Start(t)
	e.sink = smtptest.Start(t, smtptest.Options{})
	var hookURL string
	e.hooks, hookURL = newReceiver(t)
	hash, err := bcrypt.GenerateFromPassword([]byte(helpdeskPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pfPort := freePort(t)
	e.relay = startRelay(t, e.relayBin, e.dir, redis.URL(), net.JoinHostPort("127.0.0.1", strconv.Itoa(pfPort)),
		e.cert, key, hookURL, string(hash))
	_, bport, _ := net.SplitHostPort(e.relay.bounce)
	bouncePort, _ := strconv.Atoi(bport)
	_, sport, _ := net.SplitHostPort(e.sink.Addr)
	sinkPort, _ := strconv.Atoi(sport)
	e.postfix = newPostfix(t, pfPort, bouncePort, sinkPort, e.cert, key)
	e.postfix.start()
	return e
}

// submission is one answer as the helpdesk sends it.
type submission struct {
	rcpt     string
	ticket   string // X-Helpdesk-Ticket-ID
	answer   string // X-Helpdesk-Answer-ID
	noAuth   bool   // submit without AUTH
	password string // AUTH password, default helpdeskPassword
	from     string // local address to connect from, default 127.0.0.1
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// swaks submits one answer with swaks over STARTTLS, verifying the relay's
// certificate, and returns swaks's transcript and exit error.
func (e *env) swaks(t *testing.T, s submission) (string, error) {
	t.Helper()
	args := []string{"--server", e.relay.smtp, "--ehlo", "helpdesk.e2e.test",
		"--tls", "--tls-verify", "--tls-ca-path", e.cert,
		"--from", "agent@helpdesk.e2e.test", "--to", s.rcpt,
		"--header", "Subject: Re: your question",
		"--body", "Hello,\n\nhere is the answer to your question.\n\n-- \nThe helpdesk\n",
		"--timeout", "20"}
	if s.ticket != "" {
		args = append(args, "--header", "X-Helpdesk-Ticket-ID: "+s.ticket)
	}
	if s.answer != "" {
		args = append(args, "--header", "X-Helpdesk-Answer-ID: "+s.answer)
	}
	if !s.noAuth {
		pw := s.password
		if pw == "" {
			pw = helpdeskPassword
		}
		args = append(args, "--auth", "PLAIN", "--auth-user", helpdeskUser, "--auth-password", pw)
	}
	if s.from != "" {
		args = append(args, "--local-interface", s.from)
	}
	out, err := exec.Command("swaks", args...).CombinedOutput()
	return string(out), err
}

// submit submits with swaks and returns the answer id from the 250 reply's
// "queued as".
func (e *env) submit(t *testing.T, s submission) string {
	t.Helper()
	out, err := e.swaks(t, s)
	m := queuedAs.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("swaks to %s: %v, no queued as in:\n%s", s.rcpt, err, out)
	}
	return m[1]
}

// scenarioDelivered is scenario 1: an answer to a good address is sent,
// then delivered when Postfix's success DSN comes back.
func (e *env) scenarioDelivered(t *testing.T) {
	t.Parallel()
	id := e.submit(t, submission{rcpt: goodRcpt, ticket: "T-1001", answer: "A-1"})
	ind := e.relay.waitStatus(t, id, "delivered", 30*time.Second)
	if ind.Label != "Answer delivered" || ind.TicketID != "T-1001" || ind.AnswerRef != "A-1" ||
		len(ind.Recipients) != 1 || ind.Recipients[0].Status != "delivered" {
		t.Errorf("indicator = %+v", ind)
	}
	evs := e.hooks.expectEvents(t, id, "answer.scheduled", "answer.sent", "answer.delivered")
	if r := evs[2].Data.Report; r == nil || r.Recipient != goodRcpt || !strings.HasPrefix(r.StatusCode, "2.") {
		t.Errorf("answer.delivered report = %+v", r)
	}
	if evs[0].Data.TicketID != "T-1001" || evs[0].Data.AnswerRef != "A-1" {
		t.Errorf("answer.scheduled data = %+v", evs[0].Data)
	}

	rv := e.relay.report(t, id)
	rep := rv.Report
	if rep == nil || rep.Source != "smtp" || len(rep.Recipients) != 1 {
		t.Fatalf("report = %+v", rv)
	}
	if rr := rep.Recipients[0]; rr.Address != goodRcpt || rr.Action != "delivered" || !strings.HasPrefix(rr.Status, "2.") {
		t.Errorf("report recipient = %+v, want %s delivered 2.x.x", rr, goodRcpt)
	}
	for _, want := range []string{"Reporting-MTA: dns; mx.account.test", "Action: delivered", "Original-Envelope-Id: " + id} {
		if !strings.Contains(rep.Raw, want) {
			t.Errorf("raw DSN lacks %q:\n%.2000s", want, rep.Raw)
		}
	}

	// The message really reached the mailbox, through STARTTLS and AUTH,
	// tagged, from the VERP sender.
	var msg string
	eventually(t, 5*time.Second, "the message in the Maildir", func() bool {
		for _, m := range e.postfix.delivered() {
			if strings.Contains(m, "X-Answer-Relay-ID: "+id) {
				msg = m
				return true
			}
		}
		return false
	})
	// ESMTPSA: ESMTP with STARTTLS and AUTH (RFC 3848).
	for _, want := range []string{"Return-Path: <bounce+" + id + "@" + bounceDom + ">", "with ESMTPSA", "X-Helpdesk-Ticket-ID: T-1001"} {
		if !strings.Contains(msg, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, msg)
		}
	}
	// The attempt the relay recorded names Postfix's queue id, and Postfix
	// logged that message as submitted by the relay's SASL login.
	var d struct {
		Attempts []struct {
			ReplyCode int    `json:"reply_code"`
			Text      string `json:"text"`
		} `json:"attempts"`
	}
	e.relay.get(t, ownerToken, "/api/v1/answers/"+id+"/details", &d)
	if len(d.Attempts) != 1 || d.Attempts[0].ReplyCode != 250 {
		t.Fatalf("attempts = %+v, want one 250", d.Attempts)
	}
	m := queuedAs.FindStringSubmatch(d.Attempts[0].Text)
	if m == nil || !e.postfix.hasLog(m[1]+": client=", "sasl_username="+upstreamUser) {
		t.Errorf("Postfix's log has no submission by %s for the attempt %q", upstreamUser, d.Attempts[0].Text)
	}
}

// scenarioUnknownUser is scenario 2: Postfix accepts a message for an
// unknown user of its domain, then bounces it with its own DSN; the answer
// is not_delivered with the 5.1.1 report and reopens its ticket once.
func (e *env) scenarioUnknownUser(t *testing.T) {
	t.Parallel()
	id := e.submit(t, submission{rcpt: unknownRcpt, ticket: "T-1002", answer: "A-2"})
	ind := e.relay.waitStatus(t, id, "not_delivered", 30*time.Second)
	if ind.Label != "Answer not delivered" || len(ind.Recipients) != 1 || ind.Recipients[0].Status != "not_delivered" {
		t.Errorf("indicator = %+v", ind)
	}
	evs := e.hooks.expectEvents(t, id, "answer.scheduled", "answer.sent", "answer.not_delivered", "ticket.reopen")
	reopen := evs[3].Data
	if reopen.Note != reopenNote || reopen.TicketID != "T-1002" || reopen.AnswerRef != "A-2" || reopen.ReportURL == "" {
		t.Errorf("ticket.reopen data = %+v", reopen)
	}
	if r := reopen.Report; r == nil || r.StatusCode != "5.1.1" || r.Recipient != unknownRcpt {
		t.Errorf("ticket.reopen report = %+v, want 5.1.1 for %s", r, unknownRcpt)
	}

	rv := e.relay.report(t, id)
	if x := rv.Explanation; x == nil || x.Action != "failed" || x.StatusCode != "5.1.1" || x.Recipient != unknownRcpt || x.Reason != "userunknown" {
		t.Errorf("report explanation = %+v, want failed 5.1.1 userunknown", x)
	}
	rep := rv.Report
	if rep == nil || rep.Source != "smtp" || len(rep.Recipients) != 1 || !rep.Recipients[0].Hard {
		t.Fatalf("report = %+v", rv)
	}
	for _, want := range []string{"Undelivered Mail Returned to Sender", "Reporting-MTA: dns; mx.account.test", "Status: 5.1.1", "X-Answer-Relay-ID: " + id} {
		if !strings.Contains(rep.Raw, want) {
			t.Errorf("raw DSN lacks %q:\n%.2000s", want, rep.Raw)
		}
	}
}

// scenarioDeferred is scenario 3: Postfix accepts a message for a
// destination that keeps answering 451; its delay DSN makes the answer
// delayed, is kept as the report, and reopens nothing.
func (e *env) scenarioDeferred(t *testing.T) {
	t.Parallel()
	id := e.submit(t, submission{rcpt: slowRcpt, ticket: "T-1003", answer: "A-3"})
	e.relay.waitStatus(t, id, "delayed", 30*time.Second)
	evs := e.hooks.expectEvents(t, id, "answer.scheduled", "answer.sent", "answer.delayed")
	if r := evs[2].Data.Report; r == nil || !strings.HasPrefix(r.StatusCode, "4.") || r.Recipient != slowRcpt {
		t.Errorf("answer.delayed report = %+v, want a 4.x.x for %s", r, slowRcpt)
	}
	rv := e.relay.report(t, id)
	rep := rv.Report
	if rep == nil || rep.Source != "smtp" || len(rep.Recipients) != 1 {
		t.Fatalf("report = %+v", rv)
	}
	if rr := rep.Recipients[0]; rr.Action != "delayed" || !strings.HasPrefix(rr.Status, "4.") || rr.Hard {
		t.Errorf("report recipient = %+v, want delayed 4.x.x soft", rr)
	}
	for _, want := range []string{"Delayed Mail (still being retried)", "Action: delayed", "451"} {
		if !strings.Contains(rep.Raw, want) {
			t.Errorf("raw DSN lacks %q:\n%.2000s", want, rep.Raw)
		}
	}
	if n := e.sink.RcptAttempts(slowRcpt); n < 1 {
		t.Errorf("the slow destination saw no RCPT from Postfix")
	}
	// Postfix keeps retrying; nothing more may happen to the answer.
	time.Sleep(2 * time.Second)
	if got := e.hooks.forAnswer(id); len(got) != 3 {
		t.Errorf("after the delay DSN: webhooks %v, want no reopen and nothing more", types(got))
	}
	if st := e.relay.status(t, id).Status; st != "delayed" {
		t.Errorf("status %q after the delay DSN, want delayed", st)
	}
}

// scenarioUpstreamDown is scenario 4: with Postfix stopped answers stay
// scheduled, turn delayed after delay_after, and are sent (then delivered)
// once Postfix is back.
func (e *env) scenarioUpstreamDown(t *testing.T) {
	e.postfix.stop()
	submitted := time.Now()
	ids := []string{
		e.submit(t, submission{rcpt: goodRcpt, ticket: "T-1004", answer: "A-4a"}),
		e.submit(t, submission{rcpt: goodRcpt, ticket: "T-1004", answer: "A-4b"}),
	}
	// Each is tried, fails to connect, and stays scheduled.
	for _, id := range ids {
		var d struct {
			Status   string `json:"status"`
			Attempts []struct {
				Error string `json:"error"`
			} `json:"attempts"`
		}
		eventually(t, delayAfter, "a failed attempt of "+id, func() bool {
			e.relay.get(t, ownerToken, "/api/v1/answers/"+id+"/details", &d)
			return len(d.Attempts) > 0
		})
		if time.Since(submitted) < delayAfter && d.Status != "scheduled" {
			t.Errorf("%s: status %q after a failed attempt, before delay_after; want scheduled", id, d.Status)
		}
		if d.Attempts[0].Error == "" {
			t.Errorf("%s: the failed attempt records no error: %+v", id, d.Attempts[0])
		}
	}
	if code := e.relay.get(t, ownerToken, "/readyz", nil); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the upstream down = %d, want 503", code)
	}
	for _, id := range ids {
		e.relay.waitStatus(t, id, "delayed", delayAfter+10*time.Second)
	}
	if d := time.Since(submitted); d < delayAfter {
		t.Errorf("delayed after %s, before delay_after %s", d, delayAfter)
	}

	e.postfix.start()
	for _, id := range ids {
		e.relay.waitStatus(t, id, "delivered", 30*time.Second)
		evs := e.hooks.expectEvents(t, id, "answer.scheduled", "answer.delayed", "answer.sent", "answer.delivered")
		if evs[1].Data.Report != nil {
			t.Errorf("answer.delayed from the queue age carries a report: %+v", evs[1].Data.Report)
		}
		if rep := e.relay.report(t, id).Report; rep == nil || len(rep.Recipients) != 1 || rep.Recipients[0].Action != "delivered" {
			t.Errorf("%s: report = %+v, want Postfix's success DSN", id, rep)
		}
	}
	if code := e.relay.get(t, ownerToken, "/readyz", nil); code != http.StatusOK {
		t.Errorf("/readyz with the upstream back = %d, want 200", code)
	}
}

// scenarioClients is scenario 5: a client that neither authenticates nor
// comes from an allowed network is refused, a wrong password too; a client
// from the allowed network may send without AUTH; and Python's smtplib
// submits an answer as a second real client.
func (e *env) scenarioClients(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			s    submission
			want string
		}{
			{"no auth, not allowed", submission{rcpt: goodRcpt, ticket: "T-1005", noAuth: true}, "530"},
			{"wrong password", submission{rcpt: goodRcpt, ticket: "T-1005", password: "wrong-password"}, "535"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := e.swaks(t, tc.s)
				if err == nil || queuedAs.MatchString(out) || !strings.Contains(out, "<~* "+tc.want) {
					t.Errorf("swaks: %v, want refused with %s:\n%s", err, tc.want, out)
				}
			})
		}
	})

	t.Run("allowed network without auth", func(t *testing.T) {
		id := e.submit(t, submission{rcpt: goodRcpt, ticket: "T-1006", noAuth: true, from: "127.0.0.2"})
		e.relay.waitStatus(t, id, "delivered", 30*time.Second)
		e.hooks.expectEvents(t, id, "answer.scheduled", "answer.sent", "answer.delivered")
	})

	t.Run("python smtplib", func(t *testing.T) {
		script := filepath.Join(e.dir, "submit.py")
		writeFile(t, script, []byte(pythonSubmit), 0o644)
		cmd := exec.Command("python3", script)
		cmd.Env = append(os.Environ(),
			"E2E_SERVER="+e.relay.smtp, "E2E_CA="+e.cert, "E2E_USER="+helpdeskUser, "E2E_PASSWORD="+helpdeskPassword,
			"E2E_RCPT="+goodRcpt, "E2E_TICKET=T-1007", "E2E_ANSWER=A-7")
		out, err := cmd.CombinedOutput()
		m := queuedAs.FindStringSubmatch(string(out))
		if err != nil || m == nil {
			t.Fatalf("python3 smtplib: %v\n%s", err, out)
		}
		id := m[1]
		ind := e.relay.waitStatus(t, id, "delivered", 30*time.Second)
		if ind.TicketID != "T-1007" || ind.AnswerRef != "A-7" {
			t.Errorf("indicator = %+v", ind)
		}
		e.hooks.expectEvents(t, id, "answer.scheduled", "answer.sent", "answer.delivered")
		var d struct {
			Envelope struct {
				MailFrom string `json:"mail_from"`
			} `json:"envelope"`
			Headers []struct {
				Name, Value string
			} `json:"headers"`
		}
		e.relay.get(t, ownerToken, "/api/v1/answers/"+id+"/details", &d)
		if d.Envelope.MailFrom != "agent@helpdesk.e2e.test" {
			t.Errorf("details envelope = %+v", d.Envelope)
		}
	})
}

// pythonSubmit submits one answer with Python's smtplib: STARTTLS with the
// test CA, AUTH, then MAIL, RCPT and DATA, printing the reply to DATA.
const pythonSubmit = `import os, smtplib, ssl
from email.message import EmailMessage

host, port = os.environ["E2E_SERVER"].rsplit(":", 1)
msg = EmailMessage()
msg["From"] = "agent@helpdesk.e2e.test"
msg["To"] = os.environ["E2E_RCPT"]
msg["Subject"] = "Re: your question"
msg["X-Helpdesk-Ticket-ID"] = os.environ["E2E_TICKET"]
msg["X-Helpdesk-Answer-ID"] = os.environ["E2E_ANSWER"]
msg.set_content("Hello,\n\nhere is the answer, sent by smtplib.\n")

ctx = ssl.create_default_context(cafile=os.environ["E2E_CA"])
with smtplib.SMTP(host, int(port), local_hostname="helpdesk.e2e.test", timeout=20) as s:
    s.starttls(context=ctx)
    s.login(os.environ["E2E_USER"], os.environ["E2E_PASSWORD"])
    code, resp = s.mail("agent@helpdesk.e2e.test")
    assert code == 250, (code, resp)
    code, resp = s.rcpt(os.environ["E2E_RCPT"])
    assert code == 250, (code, resp)
    code, resp = s.data(msg.as_bytes())
    assert code == 250, (code, resp)
    print(code, resp.decode())
`
