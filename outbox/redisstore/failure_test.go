package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
)

// killingReader yields n bytes of a pattern and calls kill once after
// killAt bytes were read.
type killingReader struct {
	n, read, killAt int64
	kill            func()
	killed          bool
}

func (r *killingReader) Read(p []byte) (int, error) {
	if r.read >= r.n {
		return 0, io.EOF
	}
	if !r.killed && r.read >= r.killAt {
		r.killed = true
		r.kill()
	}
	n := int64(len(p))
	n = min(n, r.n-r.read, 64<<10)
	for i := range n {
		p[i] = byte('a' + (r.read+i)%26)
	}
	r.read += n
	return int(n), nil
}

func newAnswer(t *testing.T, now time.Time) *outbox.Answer {
	t.Helper()
	a, err := outbox.NewAnswer(outbox.NewID(now), "agent@helpdesk.example", []string{"ann@customer.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	a.SetReferences("T-1", "R-1")
	a.MessageID = a.ID + "@helpdesk.example"
	return a
}

// TestKillMidWrite kills redis-server (SIGKILL) while Accept streams a 24 MB
// body, restarts it from its append-only file, and checks that nothing of
// the answer is visible and that what is left of the body expires.
func TestKillMidWrite(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.WithAOF())
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	open := func() *redisstore.Store {
		s, err := redisstore.New(client, redisstore.Options{Prefix: "kill"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	now := time.Now()
	// An answer accepted before the crash, fsynced (appendfsync everysec),
	// must survive it.
	before := newAnswer(t, now)
	if err := s.Accept(ctx, before, strings.NewReader("Subject: before\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)

	a := newAnswer(t, now.Add(time.Millisecond))
	body := &killingReader{n: 24 << 20, killAt: 8 << 20, kill: srv.Kill}
	done := make(chan error, 1)
	go func() { done <- s.Accept(ctx, a, body) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Accept did not return after the server was killed")
	}
	if !body.killed {
		t.Fatal("the server was not killed mid-write")
	}
	if !errors.Is(err, outbox.ErrUnavailable) {
		t.Fatalf("Accept with the server killed: %v, want an error wrapping ErrUnavailable", err)
	}

	srv.Restart()
	s = open()
	if _, err := s.Get(ctx, a.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("Get of the half-written answer after restart: %v, want ErrNotFound", err)
	}
	if _, err := s.Body(ctx, a.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("Body of the half-written answer after restart: %v, want ErrNotFound", err)
	}
	if got, err := s.Get(ctx, before.ID); err != nil || got.ID != before.ID {
		t.Errorf("Get of the answer accepted before the crash: %v", err)
	}
	page, err := s.List(ctx, outbox.Filter{})
	if err != nil || len(page.Answers) != 1 || page.Answers[0].ID != before.ID {
		t.Errorf("List after restart: %v answers, %v; want only %s", len(page.Answers), err, before.ID)
	}
	if qs, err := s.QueueStats(ctx); err != nil || qs.Length != 1 {
		t.Errorf("QueueStats after restart: %+v, %v; want length 1", qs, err)
	}
	// Whatever is left of the streamed body is a temporary key that expires.
	keys, err := client.Keys(ctx, "kill:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.Contains(k, a.ID) {
			continue
		}
		if !strings.Contains(k, ":tmp:") {
			t.Errorf("key %s of the half-written answer survived the crash", k)
			continue
		}
		if ttl, err := client.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("temporary body %s has no TTL (%v, %v)", k, ttl, err)
		}
	}
	// The store works again, and the id of the lost answer is free.
	if err := s.Accept(ctx, a, strings.NewReader("Subject: again\r\n\r\nhello\r\n")); err != nil {
		t.Errorf("Accept after restart: %v", err)
	}
}

// TestUnavailable checks that every method fails with an error wrapping
// ErrUnavailable, without panicking, when Redis is down, and that a
// failed Accept leaves nothing once Redis is back.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.WithAOF())
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond, MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	s, err := redisstore.New(client, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := newAnswer(t, time.Now())
	if err := s.Accept(ctx, a, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease: %v, %v", ls, err)
	}
	claims, err := s.ClaimEvents(ctx, "c", 1, time.Minute)
	if err != nil || len(claims) != 1 {
		t.Fatalf("ClaimEvents: %v, %v", claims, err)
	}
	srv.Stop()

	b := newAnswer(t, time.Now())
	sent := outbox.Attempt{StartedAt: time.Now(), Outcomes: []outbox.RecipientOutcome{{Address: "ann@customer.example", Kind: outbox.OutcomeSent}}}
	rep := outbox.Report{ID: "r1", Kind: "dsn", Recipients: []outbox.ReportRecipient{{Address: "ann@customer.example", Action: "failed"}}}
	cases := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"Accept", func() error { return s.Accept(ctx, b, strings.NewReader("hello")) }},
		{"Accept large body", func() error { return s.Accept(ctx, b, bytes.NewReader(make([]byte, 1<<20))) }},
		{"Body", func() error { _, err := s.Body(ctx, a.ID); return err }},
		{"Get", func() error { _, err := s.Get(ctx, a.ID); return err }},
		{"Lookup", func() error { _, err := s.Lookup(ctx, outbox.ByAnswerRef, "R-1"); return err }},
		{"List", func() error { _, err := s.List(ctx, outbox.Filter{}); return err }},
		{"Lease", func() error { _, err := s.Lease(ctx, "w", 1, time.Minute); return err }},
		{"RecordAttempt", func() error { _, err := s.RecordAttempt(ctx, ls[0], sent); return err }},
		{"Release", func() error { return s.Release(ctx, ls[0]) }},
		{"MarkDelayed", func() error { _, err := s.MarkDelayed(ctx, time.Now(), 10); return err }},
		{"RecordReport", func() error { _, err := s.RecordReport(ctx, a.ID, rep, nil); return err }},
		{"ReportRaw", func() error { _, err := s.ReportRaw(ctx, a.ID, "r1"); return err }},
		{"Resend", func() error { _, err := s.Resend(ctx, a.ID); return err }},
		{"RecordUnmatched", func() error { return s.RecordUnmatched(ctx, rep, nil) }},
		{"ListUnmatched", func() error { _, _, err := s.ListUnmatched(ctx, "", 10); return err }},
		{"CountUnmatched", func() error { _, err := s.CountUnmatched(ctx); return err }},
		{"QueueStats", func() error { _, err := s.QueueStats(ctx); return err }},
		{"ClaimEvents", func() error { _, err := s.ClaimEvents(ctx, "c", 1, time.Minute); return err }},
		{"AckEvent", func() error { return s.AckEvent(ctx, claims[0]) }},
		{"RetryEvent", func() error { return s.RetryEvent(ctx, claims[0], time.Now(), nil) }},
		{"EventStats", func() error { _, err := s.EventStats(ctx); return err }},
		{"AddDeadLetter", func() error { return s.AddDeadLetter(ctx, outbox.DeadLetter{ID: "d"}) }},
		{"ListDeadLetters", func() error { _, _, err := s.ListDeadLetters(ctx, "", 10); return err }},
		{"TakeDeadLetter", func() error { _, err := s.TakeDeadLetter(ctx, "d"); return err }},
		{"SetEndpointDisabled", func() error { return s.SetEndpointDisabled(ctx, "e", true) }},
		{"EndpointDisabled", func() error { _, err := s.EndpointDisabled(ctx, "e"); return err }},
		{"Expire", func() error { _, err := s.Expire(ctx, time.Now().Add(time.Hour), 10); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, outbox.ErrUnavailable) {
				t.Errorf("%s with Redis down: %v, want an error wrapping ErrUnavailable", tc.name, err)
			}
		})
	}

	srv.Restart()
	// go-redis waits a moment before it dials a server that refused it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := s.Ping(ctx); err == nil {
			break
		}
	}
	if _, err := s.Get(ctx, b.ID); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("Get of the answer whose Accept failed: %v, want ErrNotFound", err)
	}
	if got, err := s.Get(ctx, a.ID); err != nil || got.Status != outbox.StatusScheduled {
		t.Errorf("Get of the answer accepted before: %v, %v", got, err)
	}
}

// TestNotFound checks the answers about ids that never existed.
func TestNotFound(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := redisstore.New(srv.Client(), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep := outbox.Report{ID: "r1", Kind: "dsn"}
	cases := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "01NOSUCHANSWER"); return err }},
		{"Get empty id", func() error { _, err := s.Get(ctx, ""); return err }},
		{"Body", func() error { _, err := s.Body(ctx, "01NOSUCHANSWER"); return err }},
		{"Lookup", func() error { _, err := s.Lookup(ctx, outbox.ByMessageID, "x@y"); return err }},
		{"RecordReport", func() error { _, err := s.RecordReport(ctx, "01NOSUCHANSWER", rep, nil); return err }},
		{"ReportRaw", func() error { _, err := s.ReportRaw(ctx, "01NOSUCHANSWER", "r1"); return err }},
		{"Resend", func() error { _, err := s.Resend(ctx, "01NOSUCHANSWER"); return err }},
		{"TakeDeadLetter", func() error { _, err := s.TakeDeadLetter(ctx, "nope"); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, outbox.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", tc.name, err)
			}
		})
	}
}
