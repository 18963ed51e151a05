package bounce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/emersion/go-smtp"
)

// Listener is the inbound SMTP server for the bounce domain. It accepts
// mail only for addresses in that domain, never relays, and hands each
// message to the intake. It answers 250 only once the bounce is kept, and
// 451 when the store cannot keep it, so the sending MTA tries again.
type Listener struct {
	cfg    Config
	intake *Intake
	log    *slog.Logger
	server *smtp.Server
}

// NewListener returns a listener for cfg.Domain feeding intake.
func NewListener(cfg Config, intake *Intake, log *slog.Logger) *Listener {
	l := &Listener{cfg: cfg, intake: intake, log: log}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		ctx, cancel := context.WithCancel(context.Background())
		return &session{l: l, remote: c.Conn().RemoteAddr().String(), ctx: ctx, cancel: cancel}, nil
	}))
	s.Domain = cfg.Hostname
	s.MaxMessageBytes = cfg.MaxMessageBytes
	s.MaxRecipients = cfg.MaxRecipients
	s.MaxLineLength = 2000 // RFC 5321 section 4.5.3.1.6 says 1000; allow sloppy MTAs some room
	s.ReadTimeout = 2 * time.Minute
	s.WriteTimeout = 2 * time.Minute
	s.EnableSMTPUTF8 = true
	s.ErrorLog = slogAdapter{log}
	l.server = s
	return l
}

// Serve accepts connections on ln until ctx is done, then shuts down,
// letting sessions in DATA finish for up to ten seconds.
func (l *Listener) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- l.server.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bounce: listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.server.Shutdown(sctx); err != nil {
		l.server.Close()
	}
	<-errc
	return nil
}

// session is one SMTP session. go-smtp gives sessions no context, so each
// has its own, cancelled when the session ends.
type session struct {
	l      *Listener
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	rcpts  []string
}

// localPart is what a bounce address may carry before the @: plain
// atoms, so %-hacks, bang paths and quoted local parts are refused.
var localPart = regexp.MustCompile(`^[A-Za-z0-9._+=-]+$`)

// ours reports whether local is a local part the listener takes mail for:
// a VERP address (<prefix>+<token>), the bare prefix, or the postmaster and
// abuse mailboxes (RFC 5321 section 4.5.1, RFC 2142). Anything else in the
// domain, such as what is left of a source-routed address, is refused.
func (l *Listener) ours(local string) bool {
	if !localPart.MatchString(local) {
		return false
	}
	switch lower := strings.ToLower(local); {
	case lower == "postmaster", lower == "abuse", lower == strings.ToLower(l.cfg.VERPPrefix):
		return true
	default:
		return strings.HasPrefix(lower, strings.ToLower(l.cfg.VERPPrefix)+"+")
	}
}

var errNotOurs = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	at := strings.LastIndexByte(to, '@')
	if at <= 0 || !strings.EqualFold(to[at+1:], s.l.cfg.Domain) || !s.l.ours(to[:at]) {
		s.l.log.Info("bounce listener refused recipient", "rcpt", to, "remote", s.remote)
		return errNotOurs
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	res, err := s.l.intake.Ingest(s.ctx, r, Envelope{Recipients: s.rcpts, Source: outbox.SourceSMTP})
	if errors.Is(err, smtp.ErrDataTooLarge) {
		return err
	}
	if err != nil {
		s.l.log.Error("bounce not kept", "err", err, "remote", s.remote)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Cannot keep the message now, try again later"}
	}
	s.l.log.Info("bounce taken in", "report", res.ReportID, "answer", res.AnswerID, "matched_by", res.MatchedBy, "duplicate", res.Duplicate)
	return nil
}

func (s *session) Reset() { s.rcpts = nil }

func (s *session) Logout() error {
	s.cancel()
	return nil
}

// slogAdapter lets go-smtp log through slog.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Println(v ...any)               { a.log.Warn(fmt.Sprint(v...)) }
