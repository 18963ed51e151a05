// Package bounce takes in returned bounces: it parses them with package
// dsn, matches them to the answer they are about and records them, by one
// intake function shared by the inbound SMTP listener for the bounce domain,
// the HTTP API (POST /api/v1/reports) and the CLI (answer-relay report
// ingest). SPEC section 3.
//
// Matching tries, in order: the VERP address the bounce was sent to
// (<prefix>+<id>@<bounce domain>), the Original-Envelope-Id of an RFC 3464
// DSN (RFC 3461 section 4.4 ENVID), the X-Answer-Relay-ID tag in the
// returned headers, the returned Message-ID, then the returned In-Reply-To
// and References. A bounce that matches nothing is kept as unmatched.
package bounce

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/dsn"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is what intake needs of the outbox.
type Store interface {
	Get(ctx context.Context, id string) (*outbox.Answer, error)
	Lookup(ctx context.Context, key outbox.LookupKey, value string) (*outbox.Answer, error)
	RecordReport(ctx context.Context, id string, rep outbox.Report, raw []byte) (*outbox.Answer, error)
	RecordUnmatched(ctx context.Context, rep outbox.Report, raw []byte) error
}

// Match names how a bounce was matched to its answer.
type Match string

// The ways of matching, in the order they are tried.
const (
	MatchVERP       Match = "verp"
	MatchEnvelopeID Match = "envelope_id"
	MatchTag        Match = "tag_header"
	MatchMessageID  Match = "message_id"
	MatchReferences Match = "references"
	MatchNone       Match = "none"
)

// Result says what Ingest did with one bounce.
type Result struct {
	// ReportID identifies the bounce (a digest of its bytes).
	ReportID string `json:"report_id"`
	// Kind is the dsn report kind ("dsn", "feedback", "autoreply", "").
	Kind string `json:"kind"`
	// AnswerID is the matched answer, empty when unmatched.
	AnswerID string `json:"answer_id,omitempty"`
	// MatchedBy says which reference matched; MatchNone when unmatched.
	MatchedBy Match `json:"matched_by"`
	// Duplicate is true when the same bounce was ingested before; nothing
	// changed this time.
	Duplicate bool `json:"duplicate"`
	// Status is the answer's status after the bounce, when matched.
	Status outbox.Status `json:"status,omitempty"`
	// Applied lists the answer's recipients whose status the bounce
	// changed.
	Applied []string `json:"applied,omitempty"`
	// Recipients are the parsed recipients of the bounce.
	Recipients []outbox.ReportRecipient `json:"recipients"`
}

// Config configures the intake and the bounce listener (the "bounce"
// section of the configuration).
type Config struct {
	// Listen is the address of the inbound SMTP listener; empty = off.
	Listen string `yaml:"listen"`
	// Domain is the bounce domain: VERP addresses and the only domain the
	// listener accepts mail for.
	Domain string `yaml:"domain"`
	// VERPPrefix is the local-part prefix of VERP addresses; cmd copies it
	// from the delivery settings, which write those addresses.
	VERPPrefix string `yaml:"-"`
	// Hostname is announced in the listener's greeting.
	Hostname string `yaml:"hostname"`
	// MaxMessageBytes caps the size of one bounce.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxRecipients caps RCPT TO commands per message.
	MaxRecipients int `yaml:"max_recipients"`
}

// Defaults returns the default configuration: listener off.
func Defaults() Config {
	return Config{VERPPrefix: "bounce", Hostname: "localhost", MaxMessageBytes: 10 << 20, MaxRecipients: 10}
}

// Validate checks the configuration and names the bad field.
func (c Config) Validate() error {
	switch {
	case c.Listen != "" && c.Domain == "":
		return errors.New("bounce.domain: required when bounce.listen is set")
	case strings.ContainsAny(c.Domain, "@ "):
		return fmt.Errorf("bounce.domain: %q is not a domain", c.Domain)
	case c.VERPPrefix == "" || strings.ContainsAny(c.VERPPrefix, "+@ "):
		return fmt.Errorf("delivery.verp_prefix: %q must be a plain local part", c.VERPPrefix)
	case c.MaxMessageBytes <= 0:
		return errors.New("bounce.max_message_bytes: must be positive")
	case c.MaxRecipients <= 0:
		return errors.New("bounce.max_recipients: must be positive")
	}
	return nil
}

// Intake parses, matches and records bounces.
type Intake struct {
	store   Store
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	clock   outbox.Clock
}

// NewIntake returns an intake recording into store. A nil Metrics counts
// nothing; a nil clock is time.Now.
func NewIntake(cfg Config, store Store, log *slog.Logger, m *Metrics, clock outbox.Clock) *Intake {
	if clock == nil {
		clock = time.Now
	}
	return &Intake{store: store, cfg: cfg, log: log, metrics: m, clock: clock}
}

// Envelope is what the transport knows about a bounce besides its bytes.
type Envelope struct {
	// Recipients are the envelope recipients (RCPT TO) the bounce came
	// to, the surest source of the VERP address.
	Recipients []string
	Source     outbox.ReportSource
}

// Ingest reads one raw message, parses it, matches it to an answer and
// records it: on the answer (moving recipient statuses as the report's
// actions say) or, when nothing matches, as unmatched. A bounce seen before
// is reported as a duplicate and changes nothing. An error means the bounce
// was not kept (the store failed, or reading raw failed): the sender should
// try again.
func (in *Intake) Ingest(ctx context.Context, raw io.Reader, env Envelope) (Result, error) {
	h := sha256.New()
	kept := &capped{limit: outbox.MaxRawReport}
	parsed, perr := dsn.Parse(io.TeeReader(raw, io.MultiWriter(h, kept)))
	// Drain what the parser did not read, so the digest covers the whole
	// message and the same bounce always gets the same id.
	if _, err := io.Copy(io.MultiWriter(h, kept), raw); err != nil {
		return Result{}, fmt.Errorf("bounce: read message: %w", err)
	}
	if perr != nil || parsed == nil {
		in.log.Warn("bounce: unparseable message kept as unmatched", "err", perr)
		parsed = &dsn.Report{}
	}
	rep := toReport(parsed, env.Source, hex.EncodeToString(h.Sum(nil))[:32])
	rep.ReceivedAt, rep.RawSize = in.clock(), int64(len(kept.Bytes()))
	res := Result{ReportID: rep.ID, Kind: parsed.Kind, Recipients: rep.Recipients, MatchedBy: MatchNone}

	a, by, err := in.match(ctx, parsed, env.Recipients)
	if err != nil {
		return Result{}, err
	}
	if a == nil {
		err := in.store.RecordUnmatched(ctx, rep, kept.Bytes())
		res.Duplicate = errors.Is(err, outbox.ErrDuplicate)
		if err != nil && !res.Duplicate {
			return Result{}, fmt.Errorf("bounce: keep unmatched: %w", err)
		}
		in.count(parsed, false, res.Duplicate)
		in.log.Info("bounce unmatched", "report", rep.ID, "kind", parsed.Kind, "duplicate", res.Duplicate)
		return res, nil
	}
	res.AnswerID, res.MatchedBy = a.ID, by
	after, err := in.store.RecordReport(ctx, a.ID, rep, kept.Bytes())
	switch {
	case errors.Is(err, outbox.ErrDuplicate):
		res.Duplicate, res.Status = true, a.Status
	case err != nil:
		return Result{}, fmt.Errorf("bounce: record report on %s: %w", a.ID, err)
	default:
		res.Status = after.Status
		res.Applied = changedRecipients(a, after)
	}
	in.count(parsed, true, res.Duplicate)
	return res, nil
}

// match finds the answer a bounce is about, trying the references in the
// order of SPEC section 3. A reference that names no answer is not an
// error: the next one is tried.
func (in *Intake) match(ctx context.Context, r *dsn.Report, envRcpts []string) (*outbox.Answer, Match, error) {
	type try struct {
		by    Match
		value string
		find  func(string) (*outbox.Answer, error)
	}
	get := func(id string) (*outbox.Answer, error) { return in.store.Get(ctx, id) }
	lookup := func(key outbox.LookupKey) func(string) (*outbox.Answer, error) {
		return func(v string) (*outbox.Answer, error) { return in.store.Lookup(ctx, key, v) }
	}
	var tries []try
	for _, addr := range append(append([]string(nil), envRcpts...), r.VERP) {
		if id := in.verpID(addr); id != "" {
			tries = append(tries, try{MatchVERP, id, get})
		}
	}
	tries = append(tries,
		try{MatchEnvelopeID, r.EnvelopeID, lookup(outbox.ByEnvelopeID)},
		try{MatchTag, r.Tag, get},
		try{MatchMessageID, r.MessageID, lookup(outbox.ByMessageID)},
	)
	for _, f := range r.ReturnedHeaders {
		if strings.EqualFold(f.Name, "In-Reply-To") || strings.EqualFold(f.Name, "References") {
			for _, id := range messageIDs(f.Value) {
				tries = append(tries, try{MatchReferences, id, lookup(outbox.ByMessageID)})
			}
		}
	}
	for _, t := range tries {
		if t.value == "" {
			continue
		}
		a, err := t.find(t.value)
		switch {
		case err == nil:
			return a, t.by, nil
		case errors.Is(err, outbox.ErrNotFound), errors.Is(err, outbox.ErrExpired):
			continue
		default:
			return nil, "", fmt.Errorf("bounce: match by %s: %w", t.by, err)
		}
	}
	return nil, MatchNone, nil
}

// changedRecipients lists the recipients whose status differs between two
// versions of an answer.
func changedRecipients(before, after *outbox.Answer) []string {
	was := make(map[string]outbox.Status, len(before.Recipients))
	for _, r := range before.Recipients {
		was[r.Address] = r.Status
	}
	var out []string
	for _, r := range after.Recipients {
		if was[r.Address] != r.Status {
			out = append(out, r.Address)
		}
	}
	return out
}

// verpID returns the answer id of a VERP address <prefix>+<id>@<domain>,
// or "" when addr is not one of ours.
func (in *Intake) verpID(addr string) string {
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || in.cfg.Domain == "" || !strings.EqualFold(addr[at+1:], in.cfg.Domain) {
		return ""
	}
	local, ok := strings.CutPrefix(addr[:at], in.cfg.VERPPrefix+"+")
	if !ok || local == "" {
		return ""
	}
	return strings.ToUpper(local) // ULIDs are upper case; some MTAs lower-case addresses
}

// messageIDs splits an In-Reply-To or References value into message ids
// without angle brackets.
func messageIDs(v string) []string {
	var out []string
	for _, f := range strings.Fields(v) {
		if id := strings.Trim(f, "<>,"); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// toReport converts a parsed bounce into the outbox's report record.
func toReport(r *dsn.Report, src outbox.ReportSource, id string) outbox.Report {
	kind := r.Kind
	if kind == dsn.KindNone {
		kind = "none"
	}
	rep := outbox.Report{ID: id, Source: src, Kind: kind, ReportingMTA: r.ReportingMTA}
	for _, rc := range r.Recipients {
		code, _ := strconv.Atoi(rc.ReplyCode)
		rep.Recipients = append(rep.Recipients, outbox.ReportRecipient{
			Address: rc.Address, Action: rc.Action, Status: rc.Status, ReplyCode: code,
			Diagnostic: rc.Diagnostic, RemoteMTA: rc.RemoteMTA, Reason: rc.Reason, Hard: rc.Hard,
		})
	}
	return rep
}

// capped keeps the first limit bytes written to it and discards the rest.
type capped struct {
	buf   []byte
	limit int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) Bytes() []byte { return c.buf }

// Metrics are the intake's Prometheus metrics.
type Metrics struct {
	bounces *prometheus.CounterVec
}

// NewMetrics registers the intake's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "answer_relay_bounces_total",
		Help: "Bounces taken in, by the action of their first recipient (failed, delayed, delivered, relayed, expanded, none), reason (Sisimai's taxonomy, or none) and whether they matched an answer (true, false, duplicate).",
	}, []string{"action", "reason", "matched"})}
	for _, matched := range []string{"true", "false", "duplicate"} {
		m.bounces.WithLabelValues("failed", "userunknown", matched)
	}
	reg.MustRegister(m.bounces)
	return m
}

func (in *Intake) count(r *dsn.Report, matched, dup bool) {
	if in.metrics == nil {
		return
	}
	action, reason := "none", "none"
	if len(r.Recipients) > 0 {
		action, reason = closed(r.Recipients[0].Action, actions), closed(r.Recipients[0].Reason, reasons)
	}
	m := strconv.FormatBool(matched)
	if dup {
		m = "duplicate"
	}
	in.metrics.bounces.WithLabelValues(action, reason, m).Inc()
}

// The closed label sets of answer_relay_bounces_total; anything else counts
// as "other".
var (
	actions = []string{"failed", "delayed", "delivered", "relayed", "expanded"}
	reasons = []string{
		"authfailure", "badreputation", "blocked", "contenterror", "delivered", "exceedlimit", "expired",
		"failedstarttls", "feedback", "filtered", "hasmoved", "hostunknown", "mailboxfull", "mailererror",
		"mesgtoobig", "networkerror", "norelaying", "notaccept", "notcompliantrfc", "onhold", "policyviolation",
		"rejected", "requireptr", "securityerror", "spamdetected", "speeding", "suppressed", "suspend",
		"syntaxerror", "systemerror", "systemfull", "toomanyconn", "undefined", "userunknown", "vacation", "virusdetected",
	}
)

func closed(v string, set []string) string {
	for _, s := range set {
		if v == s {
			return v
		}
	}
	if v == "" {
		return "none"
	}
	return "other"
}
