package bounce

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/emersion/go-smtp"
)

// startListener serves f's intake on a loopback port until the test ends.
func startListener(t *testing.T, f *fixture) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Domain, cfg.VERPPrefix = testDomain, "bounce"
	l := NewListener(cfg, f.intake, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// send delivers msg to rcpt with a null sender and returns the error of
// the first command that failed.
func send(addr, rcpt, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(strings.ReplaceAll(msg, "\r\n", "\n"))); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestListenerTakesBouncesForItsDomainOnly(t *testing.T) {
	f := newFixture(t, engines["embedded"])
	addr := startListener(t, f)
	a := f.sentAnswer(t, failedRcpt, "not-in-the-bounce@x", "T-9")

	probes := []string{
		"someone@example.com",               // another domain: no relaying
		"bounce+x@" + testDomain + ".evil",  // look-alike domain
		"user%example.com@" + testDomain,    // %-hack
		`"quoted local"@` + testDomain,      // quoted local part
		"@relay.example:user@" + testDomain, // source route
		"user!example.com@" + testDomain,    // bang path
	}
	for _, rcpt := range probes {
		if err := send(addr, rcpt, "Subject: x\r\n\r\nx\r\n"); smtpCode(err) != 550 && smtpCode(err) != 501 && smtpCode(err) != 553 {
			t.Errorf("RCPT %q: %v, want a 5xx refusal", rcpt, err)
		}
	}
	if n, _ := f.store.CountUnmatched(context.Background()); n != 0 {
		t.Errorf("a refused probe was kept")
	}

	verp := "bounce+" + a.ID + "@" + testDomain
	if err := send(addr, verp, sample(t, "failed-postfix.eml")); err != nil {
		t.Fatalf("bounce to %s: %v", verp, err)
	}
	got, err := f.store.Get(context.Background(), a.ID)
	if err != nil || got.Status != outbox.StatusNotDelivered || countEvents(got, outbox.EventTicketReopen) != 1 {
		t.Fatalf("after the bounce: %v %+v", err, got)
	}
}

func TestListenerAnswers451WhenTheStoreIsDown(t *testing.T) {
	srv := redistest.Start(t)
	store, err := redisstore.New(srv.Client(), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(*testing.T, outbox.Clock) outbox.Store { return store })
	addr := startListener(t, f)
	srv.Kill()
	start := time.Now()
	err = send(addr, "bounce+01ABC@"+testDomain, sample(t, "failed-postfix.eml"))
	if smtpCode(err) != 451 {
		t.Fatalf("with Redis down: %v, want 451", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("451 took %v", time.Since(start))
	}
	srv.Restart()
	if err := send(addr, "bounce+01ABC@"+testDomain, sample(t, "failed-postfix.eml")); err != nil {
		t.Fatalf("after Redis came back: %v", err)
	}
	if n, err := store.CountUnmatched(context.Background()); err != nil || n != 1 {
		t.Errorf("unmatched after recovery = %d, %v", n, err)
	}
}
