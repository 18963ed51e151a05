package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// SMTP replies of the submission listener. They stay short and generic;
// the details go to the log with the answer id.
var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errEncryptAuth  = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	errTooBusy      = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many sessions, try again later"}
	errTryLater     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"}
	errTooLarge     = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too big"}
	errLineTooLong  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Line too long"}
	errBadHeader    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message header"}
	errBadAddress   = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Malformed address"}
	// errSenderNotAllowed: RFC 6409 section 6.1, the submission server may
	// refuse a sender the user is not allowed to use.
	errSenderNotAllowed = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not allowed for this user"}
	errInternal         = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, try again later"}
)

// backend creates one session per client; it implements smtp.Backend.
type backend struct{ r *Relay }

// NewSession starts a session after EHLO/HELO (and again after STARTTLS).
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	r := b.r
	if n := r.active.Add(1); n > int64(r.cfg.SMTP.MaxSessions) {
		r.active.Add(-1)
		r.metrics.Rejected.WithLabelValues("too_many_sessions").Inc()
		return nil, errTooBusy
	}
	r.metrics.Sessions.Inc()
	ctx, cancel := context.WithCancel(r.baseCtx)
	remote := remoteAddr(c.Conn())
	_, isTLS := c.TLSConnectionState()
	s := &session{
		r: r, conn: c, ctx: ctx, cancel: cancel, remote: remote, tls: isTLS,
		allowed: r.allowed(remote),
		log:     r.log.With("remote", remote.String()),
	}
	// The session's whole life is bounded, whatever the client does.
	s.timer = time.AfterFunc(r.cfg.SMTP.SessionTimeout, func() { _ = c.Conn().Close() })
	return s, nil
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (r *Relay) allowed(a netip.Addr) bool {
	for _, p := range r.networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// session is one submission session; it implements smtp.Session and
// smtp.AuthSession.
type session struct {
	r       *Relay
	conn    *smtp.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	timer   *time.Timer
	remote  netip.Addr
	tls     bool
	allowed bool // the client's network may relay without AUTH
	user    string
	log     *slog.Logger

	authFailures int
	from         string
	rcpts        []string
	closeOnce    sync.Once
}

var _ smtp.AuthSession = (*session)(nil)

// authorized reports whether the client may relay: never an open relay
// (SPEC section 9).
func (s *session) authorized() bool { return s.allowed || s.user != "" }

// submitter is the AUTH identity, or the client address for an allowed
// network.
func (s *session) submitter() string {
	if s.user != "" {
		return s.user
	}
	return s.remote.String()
}

// AuthMechanisms offers PLAIN and LOGIN (RFC 4954) only over TLS, or on
// loopback when allow_insecure_auth is set (RFC 8314 section 3).
func (s *session) AuthMechanisms() []string {
	if len(s.r.users) == 0 || !s.authOverThisConn() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) authOverThisConn() bool {
	return s.tls || (s.r.cfg.SMTP.AllowInsecureAuth && s.remote.IsLoopback())
}

// Auth returns the SASL server of a mechanism.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if len(s.r.users) == 0 {
		return nil, smtp.ErrAuthUnsupported
	}
	if !s.authOverThisConn() {
		return nil, errEncryptAuth
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return s.authFailed(username, "authorization identity differs")
			}
			return s.authenticate(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{auth: s.authenticate}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// dummyHash is compared against when the user is unknown, so a wrong user
// name takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("answer-relay"), bcrypt.DefaultCost)

func (s *session) authenticate(username, password string) error {
	hash, ok := s.r.users[username]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return s.authFailed(username, "unknown user")
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return s.authFailed(username, "wrong password")
	}
	s.r.authThrottle.success(s.remote)
	s.user = username
	s.log = s.log.With("user", username)
	return nil
}

// authFailed slows the client down before it may try again: the delay
// doubles with each failure from the same address, and a session with
// three failures is closed.
func (s *session) authFailed(username, why string) error {
	s.r.metrics.AuthFailures.Inc()
	s.authFailures++
	delay := s.r.authThrottle.failure(s.remote, s.r.cfg.SMTP.AuthFailureDelay)
	s.log.Warn("smtp auth failed", "user", username, "why", why, "delay", delay)
	t := time.NewTimer(delay)
	select {
	case <-t.C:
	case <-s.ctx.Done():
		t.Stop()
	}
	if s.authFailures >= 3 {
		// The reply is written to a closed connection; the client sees the
		// connection end.
		_ = s.conn.Conn().Close()
	}
	return errAuthFailed
}

// Mail starts a transaction; the sender may be empty (a null reverse-path).
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authorized() {
		s.r.metrics.Rejected.WithLabelValues("auth_required").Inc()
		s.log.Info("smtp relay denied: not authenticated", "from", from)
		return errAuthRequired
	}
	if strings.ContainsAny(from, "\r\n") {
		return errBadAddress
	}
	if allowed := s.r.senderDomains[s.user]; s.user != "" && allowed != nil {
		at := strings.LastIndexByte(from, '@')
		if at < 0 || !allowed[strings.ToLower(from[at+1:])] {
			s.r.metrics.Rejected.WithLabelValues("sender_not_allowed").Inc()
			s.log.Info("smtp sender refused: not an allowed domain for the user", "from", from, "user", s.user)
			return errSenderNotAllowed
		}
	}
	s.from = from
	s.rcpts = s.rcpts[:0]
	return nil
}

// Rcpt adds a recipient; go-smtp enforces max_recipients.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.authorized() {
		return errAuthRequired
	}
	if to == "" || strings.ContainsAny(to, "\r\n ") {
		return errBadAddress
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// Reset ends the current transaction.
func (s *session) Reset() {
	s.from = ""
	s.rcpts = nil
}

// Logout releases the session.
func (s *session) Logout() error {
	s.closeOnce.Do(func() {
		s.timer.Stop()
		s.cancel()
		s.r.active.Add(-1)
	})
	return nil
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login), which go-sasl no longer ships but Outlook
// and many helpdesks still use.
type loginServer struct {
	auth     func(username, password string) error
	state    int
	username string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		l.state = 1
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		// An initial response is the user name.
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 1:
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.auth(l.username, string(response))
	}
	return nil, true, errors.New("relay: unexpected LOGIN response")
}

// authThrottle remembers recent AUTH failures per client address, so a
// client that reconnects is slowed down too.
type authThrottle struct {
	mu    sync.Mutex
	fails map[netip.Addr]throttleEntry
}

type throttleEntry struct {
	n    int
	last time.Time
}

const (
	maxAuthDelay     = time.Minute
	throttleForget   = 15 * time.Minute
	throttleMaxAddrs = 10000
)

func (t *authThrottle) failure(a netip.Addr, base time.Duration) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if t.fails == nil || len(t.fails) > throttleMaxAddrs {
		t.fails = make(map[netip.Addr]throttleEntry)
	}
	e := t.fails[a]
	if now.Sub(e.last) > throttleForget {
		e.n = 0
	}
	e.n++
	e.last = now
	t.fails[a] = e
	d := base
	for i := 1; i < e.n && d < maxAuthDelay; i++ {
		d *= 2
	}
	return min(d, maxAuthDelay)
}

func (t *authThrottle) success(a netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fails, a)
}
