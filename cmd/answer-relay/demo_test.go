package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/dsn"
	"github.com/answer-relay/answer-relay/outbox"
)

// syncBuffer is the demo's stdout: written by several goroutines, read by
// the test while the demo runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fastDemo is the demo with timings short enough for a test: delayed after
// 1 s, slow@ deferred for 2 s, retries every 300 ms.
func fastDemo(t *testing.T) demoOptions {
	o := defaultDemoOptions()
	o.SMTPListen, o.APIListen, o.BounceListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	o.DataDir = t.TempDir()
	o.DelayAfter = time.Second
	o.SlowFor = 2 * time.Second
	o.Retry = 300 * time.Millisecond
	o.ReportAfter = 100 * time.Millisecond
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDemoShowsEveryStatus(t *testing.T) {
	o := fastDemo(t)
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- demo(ctx, o, &stdout, &stderr) }()

	// Stop the demo as Ctrl-C would, once it has pointed at the API.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "Ctrl-C stops it") {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("the demo did not see every status within 30s:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30s of its context")
	}
	out := stdout.String()
	t.Logf("demo output:\n%s", out)

	// Every path shows its statuses, in the console line of its webhook.
	for _, p := range demoPaths(o) {
		for _, e := range p.expect {
			re := regexp.MustCompile(`(?m)webhook\s+` + p.ticket + `\s+` + regexp.QuoteMeta(p.rcpt()) + `\s+` + regexp.QuoteMeta(string(e)) + `\s`)
			if !re.MatchString(out) {
				t.Errorf("%s: no %s line", p.rcpt(), e)
			}
		}
	}
	for _, want := range []string{
		`note: "` + outbox.ReopenNote + `"`,
		"Answer delivered",
		"Answer delayed (queued over 1s)",
		"Answer not delivered (5.1.1 userunknown)",
		"451 4.2.0 Mailbox busy",
		"sends a bounce (failure DSN, 5.1.1) to bounce+",
		"Every status went by",
		"Authorization: Bearer " + demoOwnerToken,
		"/api/v1/answers/",
		"/metrics",
		"Demo stopped; the store stays in " + o.DataDir,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, bad := range []string{"REFUSED", "could not send", "submission failed", "Stopped before"} {
		if strings.Contains(out, bad) {
			t.Errorf("output has %q", bad)
		}
	}
	// The relay logs warnings only; a clean run has none.
	if s := stderr.String(); s != "" {
		t.Errorf("stderr:\n%s", s)
	}
}

func TestRunDemoFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"-nope"}, 2, "flag provided but not defined"},
		{"bad duration", []string{"-duration", "soon"}, 2, "invalid value"},
		{"negative duration", []string{"-duration", "-1s"}, 2, "-duration: must not be negative"},
		{"zero delay", []string{"-delay-after", "0s"}, 2, "must be positive"},
		{"stray argument", []string{"serve"}, 2, `unexpected argument "serve"`},
		{"help", []string{"-h"}, 0, "usage: answer-relay demo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runDemo(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.msg) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.msg)
			}
		})
	}
}

// TestRunDemoDuration runs the command as a newcomer types it, with
// -duration and -data-dir: it stops by itself and keeps the store.
func TestRunDemoDuration(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var stdout, stderr syncBuffer
	start := time.Now()
	code := runDemo(context.Background(), []string{"-duration", "1500ms", "-data-dir", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("-duration 1500ms took %s", took)
	}
	out := stdout.String()
	for _, want := range []string{"answer.scheduled", "Stopped before every status was seen; missing:", "the store stays in " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "outbox.db")); err != nil {
		t.Errorf("store file: %v", err)
	}
}

// TestDemoDSN checks that the built-in upstream's reports read as real
// ones: the package dsn parses them to what the demo promises.
func TestDemoDSN(t *testing.T) {
	headers := []byte("From: agent@helpdesk.demo.test\r\nTo: <x@example.test>\r\nMessage-ID: <m1@helpdesk.demo.test>\r\nX-Answer-Relay-ID: 01ABC\r\n\r\n")
	for _, tc := range []struct {
		name, kind, action, status, reason string
		hard                               bool
	}{
		{"failure", dsnFailed, "failed", "5.1.1", "userunknown", true},
		{"success", dsnDelivered, "delivered", "2.0.0", "delivered", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := demoDSN(tc.kind, time.Now(), "bounce+01ABC@"+demoBounceDomain, "01ABC", "x@example.test", "Q1", headers)
			r, err := dsn.Parse(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, raw)
			}
			if r.EnvelopeID != "01ABC" || r.MessageID != "m1@helpdesk.demo.test" {
				t.Errorf("envelope id %q, message id %q", r.EnvelopeID, r.MessageID)
			}
			if len(r.Recipients) != 1 {
				t.Fatalf("recipients %+v", r.Recipients)
			}
			got := r.Recipients[0]
			if got.Address != "x@example.test" || got.Action != tc.action || got.Status != tc.status || got.Reason != tc.reason || got.Hard != tc.hard {
				t.Errorf("recipient %+v, want %s %s %s hard=%v", got, tc.action, tc.status, tc.reason, tc.hard)
			}
		})
	}
}
