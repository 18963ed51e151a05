package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
)

// upstream is one server the relay delivers to.
type upstream struct {
	addr     string
	mode     string // TLSNone, TLSStartTLS or TLSImplicit
	username string
	password config.Secret
	tls      *tls.Config
}

// upstreams is the primary server and the optional secondary that takes
// over while the primary fails.
type upstreams struct {
	primary, secondary *upstream
	helo               string
	dialTimeout        time.Duration
	commandTimeout     time.Duration
	failoverPeriod     time.Duration
	clock              outbox.Clock

	mu        sync.Mutex
	downUntil time.Time // the primary is skipped until then
}

func newUpstreams(cfg UpstreamConfig, helo string, clock outbox.Clock) (*upstreams, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("relay: upstream.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("relay: upstream.ca_file: no PEM certificate in %s", cfg.CAFile)
		}
	}
	mk := func(addr, mode, user string, pass config.Secret) *upstream {
		host, _, _ := net.SplitHostPort(addr)
		return &upstream{addr: addr, mode: mode, username: user, password: pass, tls: &tls.Config{
			ServerName:         host,
			RootCAs:            roots,
			InsecureSkipVerify: cfg.InsecureSkipVerify, //nolint:gosec // explicit configuration
			MinVersion:         tls.VersionTLS12,
		}}
	}
	u := &upstreams{
		primary:        mk(cfg.Addr, cfg.TLS, cfg.Username, cfg.Password),
		helo:           helo,
		dialTimeout:    cfg.DialTimeout,
		commandTimeout: cfg.CommandTimeout,
		failoverPeriod: cfg.FailoverPeriod,
		clock:          clock,
	}
	if cfg.SecondaryAddr != "" {
		mode, user, pass := cfg.SecondaryTLS, cfg.SecondaryUsername, cfg.SecondaryPassword
		if mode == "" {
			mode = cfg.TLS
		}
		if user == "" {
			user, pass = cfg.Username, cfg.Password
		}
		u.secondary = mk(cfg.SecondaryAddr, mode, user, pass)
	}
	return u, nil
}

// choose returns the server to use now: the primary, unless it failed
// within the failover period and there is a secondary.
func (u *upstreams) choose() *upstream {
	if u.secondary == nil {
		return u.primary
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.clock().Before(u.downUntil) {
		return u.secondary
	}
	return u.primary
}

// failed notes a connection-level failure of up; a failing primary hands
// over to the secondary for the failover period.
func (u *upstreams) failed(up *upstream) bool {
	if up != u.primary || u.secondary == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.downUntil = u.clock().Add(u.failoverPeriod)
	return true
}

// upConn is one open, greeted (and, as configured, encrypted and
// authenticated) upstream connection.
type upConn struct {
	up       *upstream
	c        *smtp.Client
	sent     int
	lastUsed time.Time
}

// dial connects to up: TCP, implicit TLS or STARTTLS (RFC 3207), EHLO and
// AUTH (RFC 4954). Certificates are verified unless configured otherwise.
func (u *upstreams) dial(ctx context.Context, up *upstream) (_ *upConn, err error) {
	ctx, cancel := context.WithTimeout(ctx, u.dialTimeout)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", up.addr)
	if err != nil {
		return nil, fmt.Errorf("relay: connect to upstream %s: %w", up.addr, err)
	}
	// Everything until the connection is ready shares the dial deadline,
	// and a cancelled ctx closes the connection.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	var c *smtp.Client
	switch up.mode {
	case TLSImplicit:
		tc := tls.Client(nc, up.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("relay: TLS with upstream %s: %w", up.addr, err)
		}
		c = smtp.NewClient(tc)
	case TLSStartTLS:
		c, err = smtp.NewClientStartTLS(nc, up.tls)
		if err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("relay: STARTTLS with upstream %s: %w", up.addr, err)
		}
	default:
		c = smtp.NewClient(nc)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	c.CommandTimeout = u.commandTimeout
	c.SubmissionTimeout = u.commandTimeout
	if err := c.Hello(u.helo); err != nil {
		return nil, fmt.Errorf("relay: EHLO to upstream %s: %w", up.addr, err)
	}
	if up.username != "" {
		if err := authenticate(c, up); err != nil {
			return nil, fmt.Errorf("relay: AUTH with upstream %s: %w", up.addr, err)
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("relay: connect to upstream %s: %w", up.addr, ctx.Err())
	}
	_ = nc.SetDeadline(time.Time{})
	return &upConn{up: up, c: c}, nil
}

func authenticate(c *smtp.Client, up *upstream) error {
	if ok, _ := c.Extension("AUTH"); !ok {
		return errors.New("the server offers no AUTH")
	}
	switch {
	case c.SupportsAuth(sasl.Plain):
		return c.Auth(sasl.NewPlainClient("", up.username, up.password.Reveal()))
	case c.SupportsAuth(sasl.Login):
		return c.Auth(sasl.NewLoginClient(up.username, up.password.Reveal()))
	}
	return errors.New("the server offers neither AUTH PLAIN nor LOGIN")
}

// reachable dials the server the workers would use and says goodbye.
func (u *upstreams) reachable(ctx context.Context) error {
	try := func(up *upstream) error {
		uc, err := u.dial(ctx, up)
		if err != nil {
			return err
		}
		_ = uc.c.Quit()
		_ = uc.c.Close()
		return nil
	}
	err := try(u.primary)
	if err != nil && u.secondary != nil {
		if err2 := try(u.secondary); err2 == nil {
			return nil
		} else {
			err = errors.Join(err, err2)
		}
	}
	return err
}

// close ends the connection politely.
func (uc *upConn) close() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = uc.c.Quit()
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	_ = uc.c.Close()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// headersNeedUTF8 reports whether the header section has raw UTF-8
// (RFC 6532), for which SMTPUTF8 is requested when the upstream offers it.
func headersNeedUTF8(a *outbox.Answer) bool {
	for _, h := range a.Headers {
		if !isASCII(h.Name) || !isASCII(h.Value) {
			return true
		}
	}
	return false
}
