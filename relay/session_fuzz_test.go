package relay

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/answer-relay/answer-relay/outbox/embedstore"
)

// fuzzLog collects the relay's log so a recovered panic (go-smtp logs its
// own recoveries as "panic serving") fails the iteration that caused it.
type fuzzLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *fuzzLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *fuzzLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()
	l.buf.Reset()
	return s
}

// replyLine is a well-formed reply line (RFC 5321 section 4.2): a code of
// 2xx to 5xx, then a space (last line) or a hyphen (more lines follow).
var replyLine = regexp.MustCompile(`^[2-5][0-5][0-9]([ -].*)?$`)

// FuzzSession feeds arbitrary client input to a real submission listener
// over loopback, with the embedded store behind it. Properties: the relay
// never panics; every reply line is well formed and at most 512 octets
// (RFC 5321 section 4.5.3.1.5); the first is the 220 greeting; every
// "250 ... queued as <id>" names an answer the store really has (a 250 is
// a promise); and the listener still greets the next client.
func FuzzSession(f *testing.F) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	store, err := embedstore.Open(filepath.Join(f.TempDir(), "outbox.db"), embedstore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = store.Close() })
	logs := &fuzzLog{}
	cfg := DefaultConfig()
	cfg.SMTP.Listen = "127.0.0.1:0"
	cfg.SMTP.Hostname = "relay.test"
	cfg.SMTP.AllowNetworks = []string{"127.0.0.2/32"} // not the fuzzer: it must AUTH
	cfg.SMTP.Users = []string{"helpdesk:" + string(hash)}
	cfg.SMTP.AllowInsecureAuth = true
	cfg.SMTP.AuthFailureDelay = 0
	cfg.SMTP.MaxMessageBytes = 64 << 10
	cfg.SMTP.MaxRecipients = 5
	cfg.SMTP.CommandTimeout = 2 * time.Second
	cfg.SMTP.SessionTimeout = 5 * time.Second
	cfg.SMTP.ShutdownTimeout = time.Second
	cfg.Upstream.Addr = "127.0.0.1:9" // discard: deliveries fail and wait an hour
	cfg.Upstream.TLS = TLSNone
	cfg.Delivery.RetrySchedule = []string{"1h"}
	cfg.Delivery.Workers = 1
	cfg.Delivery.ShutdownTimeout = time.Second
	r, err := New(cfg, store, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry(), nil)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	f.Cleanup(func() { cancel(); <-done })
	<-r.Ready()
	addr := r.Addr().String()

	auth := "AUTH PLAIN AGhlbHBkZXNrAHNlY3JldA==\r\n" // helpdesk / secret
	msg := "MAIL FROM:<agent@helpdesk.test>\r\nRCPT TO:<customer@example.com>\r\nDATA\r\n" +
		"Subject: Re: your ticket\r\nX-Helpdesk-Ticket-ID: T-1\r\n\r\nHello.\r\n..leading dot\r\n.\r\n"
	for _, seed := range []string{
		"EHLO helpdesk.test\r\n" + auth + msg + "QUIT\r\n",
		"EHLO helpdesk.test\r\n" + msg,
		"HELO x\r\n" + auth + msg + msg + "RSET\r\nNOOP\r\nQUIT\r\n",
		"EHLO x\r\nAUTH LOGIN\r\naGVscGRlc2s=\r\nc2VjcmV0\r\n" + msg,
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nMAIL FROM:<a@b> SIZE=99999999999999999999 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2B\r\n",
		"EHLO x\r\n" + auth + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d\r\nBDAT 5 LAST\r\nhello",
		"EHLO x\r\n" + auth + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("x", 3000) + "\r\n.\r\n",
		"EHLO x\r\n" + auth + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: =?utf-8?q?=E2=9C=93?=\r\nX:\x00\xff\r\n\n.\n\r\n.\r\n",
		"EHLO x\r\n" + auth + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("H: v\r\n", 200) + "\r\n.\r\n",
		"\x00\x01\x02\r\n\r\n\r\nSTARTTLS\r\nEHLO\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			_, _ = conn.Write(input)
			_ = conn.(*net.TCPConn).CloseWrite() // EOF: the session ends
		}()
		out, _ := io.ReadAll(conn)
		lines := strings.Split(string(out), "\r\n")
		lines = lines[:len(lines)-1] // what follows the last CRLF is not a whole line
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "220 ") {
			t.Fatalf("no 220 greeting: %q", out)
		}
		for _, l := range lines {
			if !replyLine.MatchString(l) || len(l)+2 > 512 {
				t.Fatalf("malformed reply line %q in %q", l, out)
			}
			if _, id, ok := strings.Cut(l, "queued as "); ok && strings.HasPrefix(l, "250") {
				sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := store.Get(sctx, strings.TrimSpace(id))
				scancel()
				if err != nil {
					t.Fatalf("250 for %s, but the store says %v", id, err)
				}
			}
		}
		if l := logs.take(); strings.Contains(l, "panic") {
			t.Fatalf("panic in the relay: %s", l)
		}
		// The listener still serves.
		c2, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("listener gone: %v", err)
		}
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		greet := make([]byte, 4)
		if _, err := io.ReadFull(c2, greet); err != nil || string(greet) != "220 " {
			t.Fatalf("next client greeted with %q, %v", greet, err)
		}
	})
}
