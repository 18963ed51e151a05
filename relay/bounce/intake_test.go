package bounce

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/answer-relay/answer-relay/outbox/storetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	testDomain = "bounces.test"
	// The recipient and returned Message-ID of testdata/failed-postfix.eml.
	failedRcpt  = "kijitora@example.co.jp"
	failedMsgID = "A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp"
)

// engines opens each real store engine for a test.
var engines = map[string]func(t *testing.T, clock outbox.Clock) outbox.Store{
	"embedded": func(t *testing.T, clock outbox.Clock) outbox.Store {
		s, err := embedstore.Open(filepath.Join(t.TempDir(), "outbox.db"), embedstore.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	"redis": func(t *testing.T, clock outbox.Clock) outbox.Store {
		s, err := redisstore.New(redistest.Start(t).Client(), redisstore.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

type fixture struct {
	store  outbox.Store
	intake *Intake
	clock  *storetest.Clock
	reg    *prometheus.Registry
}

func newFixture(t *testing.T, open func(*testing.T, outbox.Clock) outbox.Store) *fixture {
	clock := storetest.NewClock(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	store := open(t, clock.Now)
	cfg := Defaults()
	cfg.Domain, cfg.VERPPrefix = testDomain, "bounce"
	reg := prometheus.NewRegistry()
	return &fixture{store: store, clock: clock, reg: reg,
		intake: NewIntake(cfg, store, slog.New(slog.DiscardHandler), NewMetrics(reg), clock.Now)}
}

// sentAnswer stores an answer to rcpt with a ticket and message id and
// records the upstream's 250 for it, as the relay would.
func (f *fixture) sentAnswer(t *testing.T, rcpt, messageID, ticket string) *outbox.Answer {
	t.Helper()
	ctx := context.Background()
	a, err := outbox.NewAnswer(outbox.NewID(f.clock.Now()), "agent@helpdesk.test", []string{rcpt}, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	a.SetReferences(ticket, "ans-"+ticket)
	a.MessageID = messageID
	if err := f.store.Accept(ctx, a, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	leases, err := f.store.Lease(ctx, "w", 10, time.Minute)
	if err != nil || len(leases) != 1 {
		t.Fatalf("lease: %v %d", err, len(leases))
	}
	att := outbox.Attempt{StartedAt: f.clock.Now(), Upstream: "upstream.test:25",
		Outcomes: []outbox.RecipientOutcome{{Address: rcpt, Kind: outbox.OutcomeSent, Code: 250}}}
	if _, err := f.store.RecordAttempt(ctx, leases[0], att); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	got, err := f.store.Get(ctx, a.ID)
	if err != nil || got.Status != outbox.StatusSent {
		t.Fatalf("answer not sent: %v %+v", err, got)
	}
	return got
}

func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func countEvents(a *outbox.Answer, typ outbox.EventType) int {
	n := 0
	for _, e := range a.Events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestFailedBounceByEachReference delivers a real Postfix bounce rewritten
// to point at the answer by each reference in turn, the others removed.
func TestFailedBounceByEachReference(t *testing.T) {
	raw := sample(t, "failed-postfix.eml")
	tests := []struct {
		name    string
		rewrite func(raw string, a *outbox.Answer) (string, []string)
		want    Match
	}{
		{"verp", func(raw string, a *outbox.Answer) (string, []string) {
			return strings.ReplaceAll(raw, failedMsgID, "someone-else@example.net"), []string{"bounce+" + strings.ToLower(a.ID) + "@" + testDomain}
		}, MatchVERP},
		{"envelope id", func(raw string, a *outbox.Answer) (string, []string) {
			raw = strings.ReplaceAll(raw, failedMsgID, "someone-else@example.net")
			return strings.Replace(raw, "X-Postfix-Queue-ID:", "Original-Envelope-Id: "+a.EnvelopeID+"\nX-Postfix-Queue-ID:", 1), nil
		}, MatchEnvelopeID},
		{"tag header", func(raw string, a *outbox.Answer) (string, []string) {
			raw = strings.ReplaceAll(raw, failedMsgID, "someone-else@example.net")
			return strings.Replace(raw, "Message-Id: <someone-else", "X-Answer-Relay-ID: "+a.ID+"\nMessage-Id: <someone-else", 1), nil
		}, MatchTag},
		{"message id", func(raw string, a *outbox.Answer) (string, []string) {
			return raw, nil
		}, MatchMessageID},
		{"references", func(raw string, a *outbox.Answer) (string, []string) {
			raw = strings.ReplaceAll(raw, "Message-Id: <"+failedMsgID+">", "Message-Id: <someone-else@example.net>\nIn-Reply-To: <"+failedMsgID+">")
			return raw, nil
		}, MatchReferences},
	}
	for engine, open := range engines {
		for _, tt := range tests {
			t.Run(engine+"/"+tt.name, func(t *testing.T) {
				f := newFixture(t, open)
				a := f.sentAnswer(t, failedRcpt, failedMsgID, "T-42")
				msg, rcpts := tt.rewrite(raw, a)
				res, err := f.intake.Ingest(context.Background(), strings.NewReader(msg), Envelope{Recipients: rcpts, Source: outbox.SourceSMTP})
				if err != nil {
					t.Fatal(err)
				}
				if res.AnswerID != a.ID || res.MatchedBy != tt.want || res.Status != outbox.StatusNotDelivered || res.Duplicate ||
					len(res.Applied) != 1 || res.Applied[0] != failedRcpt {
					t.Fatalf("result = %+v, want answer %s matched by %s, not_delivered", res, a.ID, tt.want)
				}
				got, err := f.store.Get(context.Background(), a.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != outbox.StatusNotDelivered || got.Recipients[0].Enhanced != "5.1.1" {
					t.Errorf("answer %s, recipient %+v", got.Status, got.Recipients[0])
				}
				if n := countEvents(got, outbox.EventTicketReopen); n != 1 {
					t.Errorf("%d ticket.reopen events, want 1", n)
				}
				last := got.Events[len(got.Events)-1]
				if last.Type != outbox.EventTicketReopen || last.Report == nil || last.Report.StatusCode != "5.1.1" || last.TicketID != "T-42" {
					t.Errorf("reopen event = %+v", last)
				}
				if rep := got.Reports[len(got.Reports)-1]; !rep.ReceivedAt.Equal(f.clock.Now()) || rep.RawSize != int64(len(msg)) {
					t.Errorf("report received at %v (want %v), raw size %d (want %d)", rep.ReceivedAt, f.clock.Now(), rep.RawSize, len(msg))
				}
				rawKept, err := f.store.ReportRaw(context.Background(), a.ID, res.ReportID)
				if err != nil || !bytes.Equal(rawKept, []byte(msg)) {
					t.Errorf("raw report not kept byte for byte: %v", err)
				}
			})
		}
	}
}

func TestIngestCases(t *testing.T) {
	ctx := context.Background()
	for engine, open := range engines {
		t.Run(engine+"/duplicate changes nothing", func(t *testing.T) {
			f := newFixture(t, open)
			a := f.sentAnswer(t, failedRcpt, failedMsgID, "T-1")
			raw := sample(t, "failed-postfix.eml")
			first, err := f.intake.Ingest(ctx, strings.NewReader(raw), Envelope{Source: outbox.SourceAPI})
			if err != nil || first.Duplicate {
				t.Fatalf("first: %+v %v", first, err)
			}
			before, _ := f.store.Get(ctx, a.ID)
			second, err := f.intake.Ingest(ctx, strings.NewReader(raw), Envelope{Source: outbox.SourceSMTP})
			if err != nil || !second.Duplicate || second.ReportID != first.ReportID || len(second.Applied) != 0 {
				t.Fatalf("second: %+v %v", second, err)
			}
			after, _ := f.store.Get(ctx, a.ID)
			if len(after.Events) != len(before.Events) || len(after.Reports) != len(before.Reports) {
				t.Errorf("duplicate changed the answer: events %d→%d reports %d→%d", len(before.Events), len(after.Events), len(before.Reports), len(after.Reports))
			}
			if v := testutil.ToFloat64(f.intake.metrics.bounces.WithLabelValues("failed", "userunknown", "duplicate")); v != 1 {
				t.Errorf("duplicate bounces counted %v, want 1", v)
			}
		})
		t.Run(engine+"/unmatched is kept and counted", func(t *testing.T) {
			f := newFixture(t, open)
			f.sentAnswer(t, "other@example.org", "other@example.org", "T-2")
			res, err := f.intake.Ingest(ctx, strings.NewReader(sample(t, "failed-postfix.eml")), Envelope{Source: outbox.SourceAPI})
			if err != nil || res.MatchedBy != MatchNone || res.AnswerID != "" {
				t.Fatalf("result %+v %v", res, err)
			}
			if n, err := f.store.CountUnmatched(ctx); err != nil || n != 1 {
				t.Errorf("CountUnmatched = %d, %v", n, err)
			}
			list, _, err := f.store.ListUnmatched(ctx, "", 10)
			if err != nil || len(list) != 1 || list[0].Report.ID != res.ReportID {
				t.Errorf("ListUnmatched = %+v, %v", list, err)
			}
			again, err := f.intake.Ingest(ctx, strings.NewReader(sample(t, "failed-postfix.eml")), Envelope{Source: outbox.SourceAPI})
			if err != nil || !again.Duplicate {
				t.Errorf("unmatched twice: %+v %v", again, err)
			}
			if n, _ := f.store.CountUnmatched(ctx); n != 1 {
				t.Errorf("unmatched kept %d times", n)
			}
		})
		t.Run(engine+"/delay only: delayed, no reopen", func(t *testing.T) {
			f := newFixture(t, open)
			a := f.sentAnswer(t, "nekochan@libsisimai.org", "201612140903.uBE938DJ094645@nyaan.example.jp", "T-3")
			res, err := f.intake.Ingest(ctx, strings.NewReader(sample(t, "delayed-opensmtpd.eml")), Envelope{Source: outbox.SourceSMTP})
			if err != nil || res.AnswerID != a.ID || res.Status != outbox.StatusDelayed {
				t.Fatalf("result %+v %v", res, err)
			}
			got, _ := f.store.Get(ctx, a.ID)
			if countEvents(got, outbox.EventTicketReopen) != 0 || countEvents(got, outbox.EventDelayed) != 1 {
				t.Errorf("events %+v", got.Events)
			}
			if got.Queued() {
				t.Error("a delay DSN after the upstream took the answer must not queue it again")
			}
		})
		t.Run(engine+"/auto-reply and feedback change no status", func(t *testing.T) {
			f := newFixture(t, open)
			a := f.sentAnswer(t, "neko@libsisimai.org", "x@y", "T-4")
			verp := []string{"bounce+" + a.ID + "@" + testDomain}
			for _, name := range []string{"autoreply.eml", "feedback-arf.eml"} {
				res, err := f.intake.Ingest(ctx, strings.NewReader(sample(t, name)), Envelope{Recipients: verp, Source: outbox.SourceSMTP})
				if err != nil || res.AnswerID != a.ID || res.Status != outbox.StatusSent {
					t.Fatalf("%s: %+v %v", name, res, err)
				}
			}
			got, _ := f.store.Get(ctx, a.ID)
			if got.Status != outbox.StatusSent || len(got.Reports) != 2 || got.Reports[0].Kind != "autoreply" || got.Reports[1].Kind != "feedback" {
				t.Errorf("status %s reports %+v", got.Status, got.Reports)
			}
		})
		t.Run(engine+"/garbage is kept unmatched, not an error", func(t *testing.T) {
			f := newFixture(t, open)
			for _, garbage := range []string{"", "\x00\xff\xfe not mail at all", "Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n"} {
				res, err := f.intake.Ingest(ctx, strings.NewReader(garbage), Envelope{Source: outbox.SourceAPI})
				if err != nil || res.AnswerID != "" {
					t.Errorf("garbage %q: %+v %v", garbage, res, err)
				}
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestIngestReadErrorKeepsNothing(t *testing.T) {
	f := newFixture(t, engines["embedded"])
	if _, err := f.intake.Ingest(context.Background(), io.MultiReader(strings.NewReader("From: x\r\n"), failingReader{}), Envelope{}); err == nil {
		t.Fatal("a read error must be an error: the sender has to retry")
	}
	if n, _ := f.store.CountUnmatched(context.Background()); n != 0 {
		t.Errorf("a half-read bounce was kept")
	}
}
