// Package smtptest is a scripted SMTP server for tests: it stands in for the
// upstream mail server (or any SMTP peer) on a loopback port, accepts,
// defers (4xx) or rejects (5xx) each recipient as scripted, can drop the
// connection, advertises DSN, STARTTLS, SMTPUTF8 and AUTH as asked, and
// records every message it takes with its envelope, its MAIL and RCPT
// parameters and its bytes exactly as received.
//
// Without a script, a recipient's local part decides, so a test or a demo
// can pick an outcome by address:
//
//	defer...@   451 4.2.0 at RCPT (try again later)
//	reject...@  550 5.1.1 at RCPT (no such user)
//	drop...@    the connection is closed at RCPT
//	anything else is accepted
package smtptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Action is what the server does with a recipient or a message.
type Action struct {
	// Reply is the error reply; nil accepts.
	Reply *smtp.SMTPError
	// Drop closes the connection instead of replying.
	Drop bool
}

// Common actions.
var (
	Accept = Action{}
	Defer  = Action{Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Mailbox busy, try again later"}}
	Reject = Action{Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}}
	Drop   = Action{Drop: true}
)

// Options configure a Server.
type Options struct {
	// DSN, SMTPUTF8: advertise these extensions (RFC 3461, RFC 6531).
	DSN      bool
	SMTPUTF8 bool
	// StartTLS offers STARTTLS with a certificate made for 127.0.0.1;
	// ImplicitTLS speaks TLS from the first byte. Clients trust it through
	// Server.CertPool.
	StartTLS    bool
	ImplicitTLS bool
	// Users enables AUTH PLAIN with these user names and passwords. AUTH
	// is offered without TLS too.
	Users map[string]string
	// RequireAuth refuses MAIL without AUTH (530).
	RequireAuth bool
	// RefuseSession, when set, is the reply to EHLO instead of 250 (e.g.
	// a 421 or 554): the server will not talk to this client.
	RefuseSession *smtp.SMTPError
	// DataDelay is how long the server takes before it answers the end of
	// DATA: a slow upstream.
	DataDelay time.Duration
}

// Message is one message the server accepted.
type Message struct {
	From     string
	MailOpts smtp.MailOptions
	Rcpts    []Rcpt
	// Data is the message as received, dot-unstuffed, line endings kept.
	Data []byte
	// User is the AUTH identity, TLS whether the session was encrypted.
	User string
	TLS  bool
	// Conn numbers the connection it came on, from 1.
	Conn int
}

// Rcpt is one accepted recipient with its RCPT parameters.
type Rcpt struct {
	Addr string
	Opts smtp.RcptOptions
}

// Server is a scripted SMTP server on a loopback port.
type Server struct {
	// Addr is host:port.
	Addr string

	opts     Options
	srv      *smtp.Server
	ln       net.Listener
	certPool *x509.CertPool
	certPEM  []byte

	mu       sync.Mutex
	rcpt     map[string]Action
	data     *Action
	msgs     []Message
	conns    int
	connNo   map[*smtp.Conn]int
	attempts map[string]int // RCPT commands per address
	notify   chan struct{}
}

// Start starts a server on 127.0.0.1 and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server on 127.0.0.1; Close stops it.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, rcpt: map[string]Action{}, attempts: map[string]int{}, connNo: map[*smtp.Conn]int{}, notify: make(chan struct{}, 1)}
	srv := smtp.NewServer(s)
	srv.Domain = "upstream.test"
	srv.AllowInsecureAuth = true
	srv.EnableDSN = opts.DSN
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.MaxLineLength = 10000
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	var tlsConfig *tls.Config
	if opts.StartTLS || opts.ImplicitTLS {
		cert, pool, certPEM, _, err := NewCert("127.0.0.1", "localhost")
		if err != nil {
			return nil, err
		}
		s.certPEM = certPEM
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.certPool = pool
	}
	if opts.StartTLS {
		srv.TLSConfig = tlsConfig
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if opts.ImplicitTLS {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.srv, s.ln, s.Addr = srv, ln, ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and closes every connection.
func (s *Server) Close() { _ = s.srv.Close() }

// CertPool trusts the server's certificate (nil without TLS).
func (s *Server) CertPool() *x509.CertPool { return s.certPool }

// CertPEM is the server's certificate in PEM, for a CA file (nil without
// TLS).
func (s *Server) CertPEM() []byte { return s.certPEM }

// SetRcpt scripts the action for one recipient address (case-insensitive),
// overriding the local-part convention.
func (s *Server) SetRcpt(addr string, a Action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcpt[strings.ToLower(addr)] = a
}

// SetData scripts the reply after the data (nil: accept).
func (s *Server) SetData(a *Action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = a
}

// Messages returns the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Connections counts the connections that said EHLO so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// RcptAttempts counts the RCPT commands seen for addr.
func (s *Server) RcptAttempts(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[strings.ToLower(addr)]
}

// WaitMessages waits until the server has at least n messages, failing the
// test after timeout.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := s.Messages(); len(m) >= n {
			return m
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("smtptest: %d messages after %v, want %d", len(s.Messages()), timeout, n)
		}
		select {
		case <-s.notify:
		case <-time.After(min(left, 50*time.Millisecond)):
		}
	}
}

func (s *Server) action(addr string) Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts[strings.ToLower(addr)]++
	if a, ok := s.rcpt[strings.ToLower(addr)]; ok {
		return a
	}
	local := strings.ToLower(addr)
	switch {
	case strings.HasPrefix(local, "defer"):
		return Defer
	case strings.HasPrefix(local, "reject"):
		return Reject
	case strings.HasPrefix(local, "drop"):
		return Drop
	}
	return Accept
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	n, ok := s.connNo[c]
	if !ok {
		s.conns++
		n = s.conns
		s.connNo[c] = n
	}
	s.mu.Unlock()
	if s.opts.RefuseSession != nil {
		return nil, s.opts.RefuseSession
	}
	_, isTLS := c.TLSConnectionState()
	return &session{s: s, c: c, conn: n, tls: isTLS}, nil
}

type session struct {
	s    *Server
	c    *smtp.Conn
	conn int
	tls  bool
	user string
	msg  *Message
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Users == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if ss.s.opts.Users == nil || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if want, ok := ss.s.opts.Users[user]; ok && want == pass {
			ss.user = user
			return nil
		}
		return smtp.ErrAuthFailed
	}), nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.s.opts.RequireAuth && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.msg = &Message{From: from, User: ss.user, TLS: ss.tls, Conn: ss.conn}
	if opts != nil {
		ss.msg.MailOpts = *opts
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	a := ss.s.action(to)
	if a.Drop {
		_ = ss.c.Conn().Close()
		return errors.New("dropped")
	}
	if a.Reply != nil {
		return a.Reply
	}
	r := Rcpt{Addr: to}
	if opts != nil {
		r.Opts = *opts
	}
	ss.msg.Rcpts = append(ss.msg.Rcpts, r)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	time.Sleep(ss.s.opts.DataDelay)
	ss.s.mu.Lock()
	a := ss.s.data
	ss.s.mu.Unlock()
	if a != nil {
		if a.Drop {
			_ = ss.c.Conn().Close()
			return errors.New("dropped")
		}
		if a.Reply != nil {
			return a.Reply
		}
	}
	ss.msg.Data = buf.Bytes()
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, *ss.msg)
	ss.s.mu.Unlock()
	select {
	case ss.s.notify <- struct{}{}:
	default:
	}
	return nil
}

func (ss *session) Reset()        { ss.msg = nil }
func (ss *session) Logout() error { return nil }

// NewCert makes a self-signed certificate for hosts (IP addresses or
// names), valid for a day, and returns it, a pool trusting it, and its
// certificate and key in PEM.
func NewCert(hosts ...string) (tls.Certificate, *x509.CertPool, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: hosts[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return cert, pool, certPEM, keyPEM, nil
}
