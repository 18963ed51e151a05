package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/internal/smtptest"
	"github.com/answer-relay/answer-relay/outbox"
)

// TestDeliveryOutcomes sends one answer per case through the relay to the
// scripted upstream and checks each recipient's status and the answer's.
func TestDeliveryOutcomes(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{DSN: true})
	e.startRelay(testConfig(e.up.Addr))

	tests := []struct {
		name   string
		rcpts  []string
		answer outbox.Status
		want   map[string]outbox.Status
		reason string
	}{
		{"sent", []string{"ok@example.com"}, outbox.StatusSent,
			map[string]outbox.Status{"ok@example.com": outbox.StatusSent}, ""},
		{"rejected", []string{"reject@example.com"}, outbox.StatusNotDelivered,
			map[string]outbox.Status{"reject@example.com": outbox.StatusNotDelivered}, "userunknown"},
		{"deferred stays scheduled", []string{"defer@example.com"}, outbox.StatusScheduled,
			map[string]outbox.Status{"defer@example.com": outbox.StatusScheduled}, ""},
		{"dropped connection stays scheduled", []string{"drop@example.com"}, outbox.StatusScheduled,
			map[string]outbox.Status{"drop@example.com": outbox.StatusScheduled}, ""},
		{"mixed per recipient", []string{"ok2@example.com", "reject2@example.com", "defer2@example.com"}, outbox.StatusNotDelivered,
			map[string]outbox.Status{"ok2@example.com": outbox.StatusSent, "reject2@example.com": outbox.StatusNotDelivered, "defer2@example.com": outbox.StatusScheduled}, "userunknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustSubmit(t, e.addr(), tt.rcpts, message())
			a := e.waitStatus(id, tt.answer, 1)
			for _, r := range a.Recipients {
				if r.Status != tt.want[r.Address] {
					t.Errorf("%s: status %s, want %s", r.Address, r.Status, tt.want[r.Address])
				}
				if r.Status == outbox.StatusNotDelivered && (r.Code != 550 || r.Enhanced != "5.1.1" || r.Reason != tt.reason) {
					t.Errorf("%s: code %d %s reason %q, want 550 5.1.1 %q", r.Address, r.Code, r.Enhanced, r.Reason, tt.reason)
				}
			}
			if tt.answer == outbox.StatusNotDelivered && len(a.Reports) == 0 {
				t.Errorf("a permanent rejection keeps the upstream's reply as a report")
			}
			if a.Queued() && !a.NextAttemptAt.After(e.clock.Now()) {
				t.Errorf("queued answer due at %v, want after now (%v)", a.NextAttemptAt, e.clock.Now())
			}
		})
	}

	// The one sent message carried the DSN parameters and the tag.
	var got *smtptest.Message
	for _, m := range e.up.Messages() {
		if m.Rcpts[0].Addr == "ok@example.com" {
			got = &m
		}
	}
	if got == nil {
		t.Fatal("upstream has no message for ok@example.com")
	}
	if got.MailOpts.Return != smtp.DSNReturnHeaders || len(got.MailOpts.EnvelopeID) != 26 {
		t.Errorf("MAIL parameters %+v, want RET=HDRS and ENVID=<id>", got.MailOpts)
	}
	if n := got.Rcpts[0].Opts.Notify; !slices.Equal(n, []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}) {
		t.Errorf("NOTIFY=%v, want FAILURE,DELAY", n)
	}
	if want := "X-Answer-Relay-ID: " + got.MailOpts.EnvelopeID + "\r\n"; !bytes.HasPrefix(got.Data, []byte(want)) {
		t.Errorf("message starts %q, want the tag header %q", got.Data[:60], want)
	}
	if n := counterValue(e.relay.metrics.Accepted); n != 5 {
		t.Errorf("accepted metric %v, want 5", n)
	}
}

// TestRetryThenExpire follows a deferred answer through its retries on the
// fake clock: delayed after delay_after, then not_delivered/expired after
// the maximum lifetime.
func TestRetryThenExpire(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.Delivery.RetrySchedule = []string{"1m", "10m"}
	cfg.Delivery.MaxLifetime = 2 * time.Hour
	cfg.DelayAfter = 30 * time.Minute
	e.startRelay(cfg)

	id := mustSubmit(t, e.addr(), []string{"defer@example.com"}, message())
	e.waitStatus(id, outbox.StatusScheduled, 1)
	if n := e.up.RcptAttempts("defer@example.com"); n != 1 {
		t.Fatalf("%d RCPT attempts, want 1", n)
	}
	// Not due before the first retry time.
	time.Sleep(100 * time.Millisecond)
	if n := e.up.RcptAttempts("defer@example.com"); n != 1 {
		t.Fatalf("retried before the schedule: %d RCPT attempts", n)
	}
	e.clock.Advance(75 * time.Second) // 1m + up to 20% jitter
	e.waitStatus(id, outbox.StatusScheduled, 2)

	e.clock.Advance(31 * time.Minute) // past delay_after: the sweeper marks it
	a := e.waitStatus(id, outbox.StatusDelayed, 2)
	if a.Recipients[0].Status != outbox.StatusDelayed {
		t.Errorf("recipient %s, want delayed", a.Recipients[0].Status)
	}
	for range 20 { // walk the clock past the lifetime, retry by retry
		e.clock.Advance(12 * time.Minute)
		time.Sleep(30 * time.Millisecond)
	}
	a = e.waitStatus(id, outbox.StatusNotDelivered, 3)
	r := a.Recipients[0]
	if r.Reason != "expired" || r.Code != 451 {
		t.Errorf("recipient reason %q code %d, want expired with the last reply 451", r.Reason, r.Code)
	}
}

// TestDeferredThenAccepted checks a retry delivers once the upstream
// accepts.
func TestDeferredThenAccepted(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	e.startRelay(testConfig(e.up.Addr))
	e.up.SetRcpt("busy@example.com", smtptest.Defer)
	id := mustSubmit(t, e.addr(), []string{"busy@example.com"}, message())
	e.waitStatus(id, outbox.StatusScheduled, 1)
	e.up.SetRcpt("busy@example.com", smtptest.Accept)
	e.clock.Advance(2 * time.Minute)
	a := e.waitStatus(id, outbox.StatusSent, 2)
	if a.Attempts[0].Outcomes[0].Code != 451 || a.Attempts[1].Outcomes[0].Code != 250 {
		t.Errorf("attempts %+v, want 451 then 250", a.Attempts)
	}
}

// TestDataReplies covers the upstream's reply after the data.
func TestDataReplies(t *testing.T) {
	tests := []struct {
		name string
		data smtptest.Action
		want outbox.Status
	}{
		{"4xx after data", smtptest.Action{Reply: &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "full"}}, outbox.StatusScheduled},
		{"5xx after data", smtptest.Action{Reply: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}}, outbox.StatusNotDelivered},
		{"drop after data", smtptest.Drop, outbox.StatusScheduled},
	}
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	e.startRelay(testConfig(e.up.Addr))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.up.SetData(&tt.data)
			id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
			a := e.waitStatus(id, tt.want, 1)
			if len(e.up.Messages()) != 0 {
				t.Errorf("upstream kept a message it refused")
			}
			_ = a
		})
	}
}

// TestAuthRequired: with no allowed network, MAIL without AUTH is 530 and
// a bad password 535; the right one relays. AUTH is offered over plain
// text only on loopback with allow_insecure_auth.
func TestAuthRequired(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.AllowNetworks = []string{"10.0.0.0/8"} // 127.0.0.1 is "outside"
	cfg.SMTP.Users = []string{bcryptUser(t, "helpdesk", "s3cret")}
	cfg.SMTP.AllowInsecureAuth = true
	e.startRelay(cfg)

	tests := []struct {
		name string
		auth sasl.Client
		code int
	}{
		{"no auth: relay denied", nil, 530},
		{"wrong password", sasl.NewPlainClient("", "helpdesk", "guess"), 535},
		{"unknown user", sasl.NewPlainClient("", "nobody", "s3cret"), 535},
		{"plain", sasl.NewPlainClient("", "helpdesk", "s3cret"), 250},
		{"login", sasl.NewLoginClient("helpdesk", "s3cret"), 250},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := submit(t, e.addr(), tt.auth, "agent@helpdesk.test", []string{"ok@example.com"}, message())
			if tt.code == 250 {
				if s.err != nil || s.id == "" {
					t.Fatalf("submit: %v", s.err)
				}
				a := e.waitStatus(s.id, outbox.StatusSent, 1)
				if a.Submitter != "helpdesk" {
					t.Errorf("submitter %q, want helpdesk", a.Submitter)
				}
				return
			}
			if got := smtpCode(s.err); got != tt.code {
				t.Errorf("reply %d (%v), want %d", got, s.err, tt.code)
			}
		})
	}
	if n := counterValue(e.relay.metrics.Rejected.WithLabelValues("auth_required")); n != 1 {
		t.Errorf("auth_required rejections %v, want 1", n)
	}
}

// TestSenderDomains: a user limited to some sender domains may use only
// those in MAIL FROM; a user without an entry is not limited.
func TestSenderDomains(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.AllowNetworks = nil
	cfg.SMTP.Users = []string{bcryptUser(t, "helpdesk", "s3cret"), bcryptUser(t, "ops", "s3cret")}
	cfg.SMTP.SenderDomains = []string{"helpdesk:helpdesk.test support.helpdesk.test"}
	cfg.SMTP.AllowInsecureAuth = true
	e.startRelay(cfg)

	tests := []struct {
		user, from string
		code       int
	}{
		{"helpdesk", "agent@helpdesk.test", 250},
		{"helpdesk", "agent@SUPPORT.helpdesk.test", 250},
		{"helpdesk", "ceo@bank.example", 553},
		{"helpdesk", "agent@helpdesk.test.evil.example", 553},
		{"helpdesk", "", 553},
		{"ops", "anyone@anywhere.example", 250},
	}
	for _, tt := range tests {
		t.Run(tt.user+" as "+tt.from, func(t *testing.T) {
			s := submit(t, e.addr(), sasl.NewPlainClient("", tt.user, "s3cret"), tt.from, []string{"ok@example.com"}, message())
			if tt.code == 250 {
				if s.err != nil || s.id == "" {
					t.Fatalf("submit: %v", s.err)
				}
				return
			}
			if got := smtpCode(s.err); got != tt.code {
				t.Errorf("reply %d (%v), want %d", got, s.err, tt.code)
			}
		})
	}
	if n := counterValue(e.relay.metrics.Rejected.WithLabelValues("sender_not_allowed")); n != 3 {
		t.Errorf("sender_not_allowed rejections %v, want 3", n)
	}
}

// TestAuthNeedsTLS: without allow_insecure_auth AUTH is not offered in
// plain text, and STARTTLS with the configured certificate enables it.
func TestAuthNeedsTLS(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.AllowNetworks = nil
	cfg.SMTP.Users = []string{bcryptUser(t, "helpdesk", "s3cret")}
	certFile, keyFile, certPEM := writeCert(t)
	cfg.SMTP.TLSCert, cfg.SMTP.TLSKey = certFile, keyFile
	cfg.SMTP.ImplicitTLSListen = "127.0.0.1:0"
	e.startRelay(cfg)
	auth := sasl.NewPlainClient("", "helpdesk", "s3cret")

	s := submit(t, e.addr(), auth, "agent@helpdesk.test", []string{"ok@example.com"}, message())
	if s.err == nil {
		t.Fatalf("AUTH without TLS succeeded")
	}
	pool := poolOf(t, certPEM)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	t.Run("starttls", func(t *testing.T) {
		c, err := smtp.DialStartTLS(e.addr(), tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := submitOn(t, c, auth, "agent@helpdesk.test", []string{"ok@example.com"}, message(), nil)
		if s.err != nil {
			t.Fatalf("submit over STARTTLS: %v", s.err)
		}
		e.waitStatus(s.id, outbox.StatusSent, 1)
	})
	t.Run("implicit tls", func(t *testing.T) {
		c, err := smtp.DialTLS(e.relay.ImplicitTLSAddr().String(), tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := submitOn(t, c, auth, "agent@helpdesk.test", []string{"ok@example.com"}, message(), nil)
		if s.err != nil {
			t.Fatalf("submit over implicit TLS: %v", s.err)
		}
		e.waitStatus(s.id, outbox.StatusSent, 1)
	})
}

// TestStoreDown451: with Redis killed the relay answers 451 4.3.0 and,
// once Redis is back, has kept nothing of the refused message.
func TestStoreDown451(t *testing.T) {
	if os.Getenv("RELAY_TEST_STORE") == "embedded" {
		t.Skip("needs Redis")
	}
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	e.startRelay(testConfig(e.up.Addr))
	first := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
	e.waitStatus(first, outbox.StatusSent, 1)

	e.redis.Kill()
	s := submit(t, e.addr(), nil, "agent@helpdesk.test", []string{"ok@example.com"}, message())
	var se *smtp.SMTPError
	if !errors.As(s.err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("reply %v, want 451 4.3.0", s.err)
	}
	e.redis.Restart()
	page, err := e.store.List(context.Background(), outbox.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Answers) != 1 || page.Answers[0].ID != first {
		t.Errorf("store holds %d answers after the refused one, want only the first", len(page.Answers))
	}
	// The relay works again once the store is back.
	id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
	e.waitStatus(id, outbox.StatusSent, 1)
}

// TestRestartResumes: answers queued while the upstream was unreachable
// are delivered by a new relay process on the same store.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	e.startRelay(testConfig(closedAddr(t)))
	ids := []string{
		mustSubmit(t, e.addr(), []string{"a@example.com"}, message()),
		mustSubmit(t, e.addr(), []string{"b@example.com"}, message()),
	}
	for _, id := range ids {
		a := e.waitStatus(id, outbox.StatusScheduled, 1)
		if a.Attempts[0].Error == "" {
			t.Errorf("attempt to an unreachable upstream has no error: %+v", a.Attempts[0])
		}
	}
	e.stopRelay()

	e.startRelay(testConfig(e.up.Addr))
	e.clock.Advance(2 * time.Minute)
	for _, id := range ids {
		e.waitStatus(id, outbox.StatusSent, 2)
	}
	if n := len(e.up.Messages()); n != 2 {
		t.Errorf("upstream got %d messages, want 2", n)
	}
}

// TestByteIdentical: 8BITMIME and SMTPUTF8 messages reach the upstream
// byte for byte, with only the tag header added in front.
func TestByteIdentical(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{DSN: true, SMTPUTF8: true})
	e.startRelay(testConfig(e.up.Addr))

	tests := []struct {
		name string
		from string
		to   string
		opts *smtp.MailOptions
		msg  string
		utf8 bool
	}{
		{"8bitmime", "agent@helpdesk.test", "kunde@example.com", &smtp.MailOptions{Body: smtp.Body8BitMIME},
			"From: agent@helpdesk.test\r\nTo: kunde@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <8bit@helpdesk.test>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ½ € ✓\r\n..a line starting with a dot\r\n\r\n", false},
		{"smtputf8", "agent@helpdesk.test", "jürgen@bücher.example", &smtp.MailOptions{Body: smtp.Body8BitMIME, UTF8: true},
			"From: Agent <agent@helpdesk.test>\r\nTo: Jürgen <jürgen@bücher.example>\r\nSubject: Ihre Bücher\r\nMessage-ID: <utf8@helpdesk.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo Jürgen,\r\nIhre Bücher sind unterwegs.\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := smtp.Dial(e.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := submitOn(t, c, nil, tt.from, []string{tt.to}, tt.msg, tt.opts)
			if s.err != nil {
				t.Fatalf("submit: %v", s.err)
			}
			a := e.waitStatus(s.id, outbox.StatusSent, 1)
			var got *smtptest.Message
			for _, m := range e.up.Messages() {
				if m.MailOpts.EnvelopeID == s.id {
					got = &m
				}
			}
			if got == nil {
				t.Fatal("upstream has no message")
			}
			want := "X-Answer-Relay-ID: " + s.id + "\r\n" + tt.msg
			if string(got.Data) != want {
				t.Errorf("upstream got\n%q\nwant\n%q", got.Data, want)
			}
			if got.MailOpts.UTF8 != tt.utf8 || got.Rcpts[0].Addr != tt.to {
				t.Errorf("envelope SMTPUTF8=%v to %q, want %v %q", got.MailOpts.UTF8, got.Rcpts[0].Addr, tt.utf8, tt.to)
			}
			if a.Size != int64(len(want)) {
				t.Errorf("answer size %d, want %d", a.Size, len(want))
			}
		})
	}
}

// TestTagging checks the record: a Message-ID added only when missing,
// references from headers or the Subject pattern, credential headers left
// out of the details.
func TestTagging(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.SubjectPattern = `\[Ticket#(?P<ticket>\d+)\]`
	e.startRelay(cfg)

	tests := []struct {
		name              string
		msg               string
		msgID, tkt, ref   string
		addedID, noHeader bool
	}{
		{"headers", message("X-Helpdesk-Ticket-ID: 4711", "X-Helpdesk-Answer-ID: a-99", "X-Api-Token: hunter2"),
			"m1@helpdesk.test", "4711", "a-99", false, true},
		{"subject pattern, no message-id",
			"From: a@helpdesk.test\r\nSubject: =?utf-8?q?Re=3A_=5BTicket#123=5D_K=C3=A4se?=\r\n\r\nbody\r\n",
			"", "123", "", true, false},
		{"headers only, no body", "From: a@helpdesk.test\r\nMessage-ID: <x@y>\r\n", "x@y", "", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, tt.msg)
			a := e.waitStatus(id, outbox.StatusSent, 1)
			if tt.addedID {
				tt.msgID = id + "@relay.test"
			}
			if a.MessageID != tt.msgID || a.TicketID != tt.tkt || a.AnswerRef != tt.ref {
				t.Errorf("message id %q ticket %q ref %q, want %q %q %q", a.MessageID, a.TicketID, a.AnswerRef, tt.msgID, tt.tkt, tt.ref)
			}
			if a.Events[0].TicketID != tt.tkt {
				t.Errorf("scheduled event ticket %q, want %q", a.Events[0].TicketID, tt.tkt)
			}
			for _, h := range a.Headers {
				if strings.Contains(h.Value, "hunter2") {
					t.Errorf("credential header %s kept in the details", h.Name)
				}
			}
			var got []byte
			for _, m := range e.up.Messages() {
				if m.MailOpts.EnvelopeID == id || bytes.Contains(m.Data, []byte(id)) {
					got = m.Data
				}
			}
			if n := bytes.Count(got, []byte("Message-ID:")) + bytes.Count(got, []byte("Message-Id:")); n != 1 {
				t.Errorf("upstream message has %d Message-ID headers, want 1:\n%s", n, got)
			}
		})
	}
}

// TestLimits: too many recipients and a message over the size limit get
// clear replies and nothing is stored.
func TestLimits(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.MaxMessageBytes = 5000
	cfg.SMTP.MaxRecipients = 2
	e.startRelay(cfg)

	s := submit(t, e.addr(), nil, "a@helpdesk.test", []string{"1@example.com", "2@example.com", "3@example.com"}, message())
	if smtpCode(s.err) != 452 {
		t.Errorf("third recipient: %v, want 452", s.err)
	}
	s = submit(t, e.addr(), nil, "a@helpdesk.test", []string{"1@example.com"}, message()+strings.Repeat(strings.Repeat("x", 70)+"\r\n", 80))
	if smtpCode(s.err) != 552 {
		t.Errorf("big message: %v, want 552", s.err)
	}
	s = submit(t, e.addr(), nil, "a@helpdesk.test", []string{"1@example.com"}, "Subject: x\r\n\r\n"+strings.Repeat("x", 2100)+"\r\n")
	if smtpCode(s.err) != 554 {
		t.Errorf("long line: %v, want 554", s.err)
	}
	page, err := e.store.List(context.Background(), outbox.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Answers) != 0 {
		t.Errorf("%d answers stored, want none", len(page.Answers))
	}
}

// TestSecondaryTakeover: while the primary refuses connections the
// secondary carries the answers.
func TestSecondaryTakeover(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	primary := smtptest.Start(t, smtptest.Options{RefuseSession: &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "maintenance"}})
	cfg := testConfig(primary.Addr)
	cfg.Upstream.SecondaryAddr = e.up.Addr
	e.startRelay(cfg)

	id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
	a := e.waitStatus(id, outbox.StatusSent, 1)
	if a.Attempts[0].Upstream != e.up.Addr {
		t.Errorf("sent via %s, want the secondary %s", a.Attempts[0].Upstream, e.up.Addr)
	}
	id = mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
	e.waitStatus(id, outbox.StatusSent, 1)
	if n := primary.Connections(); n != 1 {
		t.Errorf("primary got %d connections during the failover period, want 1", n)
	}
}

// TestUpstreamTLSAndAuth: STARTTLS and implicit TLS to the upstream with a
// verified certificate and AUTH; connections are reused across answers.
func TestUpstreamTLSAndAuth(t *testing.T) {
	for _, mode := range []string{TLSStartTLS, TLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			e.up = smtptest.Start(t, smtptest.Options{StartTLS: mode == TLSStartTLS, ImplicitTLS: mode == TLSImplicit,
				Users: map[string]string{"relay": "pw"}, RequireAuth: true})
			cfg := testConfig(e.up.Addr)
			cfg.Upstream.TLS = mode
			cfg.Upstream.Username, cfg.Upstream.Password = "relay", "pw"
			cfg.Upstream.CAFile = writePool(t, e.up)
			cfg.Delivery.Workers = 1
			e.startRelay(cfg)
			var ids []string
			for range 3 {
				ids = append(ids, mustSubmit(t, e.addr(), []string{"ok@example.com"}, message()))
			}
			for _, id := range ids {
				e.waitStatus(id, outbox.StatusSent, 1)
			}
			for _, m := range e.up.Messages() {
				if !m.TLS || m.User != "relay" {
					t.Errorf("message over TLS=%v as %q, want TLS as relay", m.TLS, m.User)
				}
			}
			if n := e.up.Connections(); n != 1 {
				t.Errorf("%d upstream connections for 3 answers, want 1 (reused)", n)
			}
		})
	}
	t.Run("unverified certificate", func(t *testing.T) {
		e := newEnv(t)
		e.up = smtptest.Start(t, smtptest.Options{StartTLS: true})
		cfg := testConfig(e.up.Addr)
		cfg.Upstream.TLS = TLSStartTLS
		e.startRelay(cfg)
		id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
		a := e.waitStatus(id, outbox.StatusScheduled, 1)
		if !strings.Contains(a.Attempts[0].Error, "certificate") {
			t.Errorf("attempt error %q, want a certificate error", a.Attempts[0].Error)
		}
	})
}

// TestVERP: with a prefix and a bounce domain the envelope sender carries
// the answer id.
func TestVERP(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{DSN: true})
	cfg := testConfig(e.up.Addr)
	cfg.Delivery.VERPPrefix, cfg.Delivery.BounceDomain = "bounce", "bounces.relay.test"
	cfg.Delivery.NotifySuccess = true
	e.startRelay(cfg)
	id := mustSubmit(t, e.addr(), []string{"ok@example.com"}, message())
	e.waitStatus(id, outbox.StatusSent, 1)
	m := e.up.Messages()[0]
	if want := "bounce+" + id + "@bounces.relay.test"; m.From != want {
		t.Errorf("envelope sender %q, want %q", m.From, want)
	}
	if n := m.Rcpts[0].Opts.Notify; len(n) != 3 {
		t.Errorf("NOTIFY=%v, want SUCCESS too", n)
	}
}

// TestSwaks drives the relay with swaks, the tool the README shows.
func TestSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks not installed")
	}
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{DSN: true})
	cfg := testConfig(e.up.Addr)
	cfg.SMTP.AllowNetworks = []string{"10.0.0.0/8"}
	cfg.SMTP.Users = []string{bcryptUser(t, "helpdesk", "s3cret")}
	cfg.SMTP.AllowInsecureAuth = true
	e.startRelay(cfg)
	host, port, _ := strings.Cut(e.addr(), ":")

	tests := []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"denied without auth", nil, false, "530 5.7.0"},
		{"auth login", []string{"--auth", "LOGIN", "--auth-user", "helpdesk", "--auth-password", "s3cret"}, true, "queued as"},
		{"auth plain", []string{"--auth", "PLAIN", "--auth-user", "helpdesk", "--auth-password", "s3cret"}, true, "queued as"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--server", host, "--port", port, "--from", "agent@helpdesk.test", "--to", "ok@example.com",
				"--header", "X-Helpdesk-Ticket-ID: 42", "--timeout", "10"}, tt.args...)
			out, err := exec.Command(swaks, args...).CombinedOutput()
			if (err == nil) != tt.ok || !strings.Contains(string(out), tt.want) {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			if !tt.ok {
				return
			}
			i := strings.Index(string(out), "queued as ")
			id := strings.Fields(string(out)[i+len("queued as "):])[0]
			a := e.waitStatus(id, outbox.StatusSent, 1)
			if a.TicketID != "42" {
				t.Errorf("ticket %q, want 42", a.TicketID)
			}
		})
	}
}

// TestGracefulShutdown: Run returns promptly with idle workers, and the
// listener no longer accepts.
func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	e.startRelay(testConfig(e.up.Addr))
	addr := e.addr()
	start := time.Now()
	e.stopRelay()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if c, err := smtp.Dial(addr); err == nil {
		_ = c.Close()
		t.Errorf("listener still accepts after shutdown")
	}
}

// TestUpstreamReachable checks the readiness probe.
func TestUpstreamReachable(t *testing.T) {
	e := newEnv(t)
	e.up = smtptest.Start(t, smtptest.Options{})
	r := e.startRelay(testConfig(e.up.Addr))
	if err := r.UpstreamReachable(context.Background()); err != nil {
		t.Errorf("reachable upstream: %v", err)
	}
	e.up.Close()
	if err := r.UpstreamReachable(context.Background()); err == nil {
		t.Errorf("closed upstream reported reachable")
	}
}

func poolOf(t *testing.T, certPEM []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(certPEM) {
		t.Fatal("bad PEM")
	}
	return p
}

func writePool(t *testing.T, s *smtptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, s.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
