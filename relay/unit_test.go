package relay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/answer-relay/answer-relay/outbox"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Upstream.Addr = "smtp.example.com:587"
	c.SMTP.AllowNetworks = []string{"10.0.0.0/8"}
	return c
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		field  string // "" = valid
	}{
		{"defaults with an upstream and a network", func(*Config) {}, ""},
		{"no upstream", func(c *Config) { c.Upstream.Addr = "" }, "upstream.addr"},
		{"upstream without port", func(c *Config) { c.Upstream.Addr = "smtp.example.com" }, "upstream.addr"},
		{"bad tls mode", func(c *Config) { c.Upstream.TLS = "ssl" }, "upstream.tls"},
		{"user without password", func(c *Config) { c.Upstream.Username = "u" }, "upstream.username"},
		{"nobody may submit", func(c *Config) { c.SMTP.AllowNetworks = nil }, "smtp.users"},
		{"bad network", func(c *Config) { c.SMTP.AllowNetworks = []string{"10.0.0.0/33"} }, "smtp.allow_networks"},
		{"single address network", func(c *Config) { c.SMTP.AllowNetworks = []string{"192.0.2.7"} }, ""},
		{"user without bcrypt hash", func(c *Config) { c.SMTP.Users = []string{"helpdesk:plaintext"} }, "smtp.users"},
		{"sender domains without domains", func(c *Config) { c.SMTP.SenderDomains = []string{"helpdesk:"} }, "smtp.sender_domains"},
		{"sender domain that is an address", func(c *Config) { c.SMTP.SenderDomains = []string{"helpdesk:a@b.test"} }, "smtp.sender_domains"},
		{"sender domains", func(c *Config) { c.SMTP.SenderDomains = []string{"helpdesk:a.test b.test"} }, ""},
		{"cert without key", func(c *Config) { c.SMTP.TLSCert = "/x.pem" }, "smtp.tls_cert"},
		{"implicit tls without cert", func(c *Config) { c.SMTP.ImplicitTLSListen = "127.0.0.1:465" }, "smtp.implicit_tls_listen"},
		{"short lines", func(c *Config) { c.SMTP.MaxLineLength = 500 }, "smtp.max_line_length"},
		{"subject pattern without group", func(c *Config) { c.SMTP.SubjectPattern = `Ticket#\d+` }, "smtp.subject_pattern"},
		{"subject pattern broken", func(c *Config) { c.SMTP.SubjectPattern = `(` }, "smtp.subject_pattern"},
		{"bad tag header", func(c *Config) { c.SMTP.TagHeader = "X Tag" }, "smtp.tag_header"},
		{"empty retry schedule", func(c *Config) { c.Delivery.RetrySchedule = nil }, "delivery.retry_schedule"},
		{"bad retry delay", func(c *Config) { c.Delivery.RetrySchedule = []string{"1m", "soon"} }, "delivery.retry_schedule"},
		{"verp without domain", func(c *Config) { c.Delivery.VERPPrefix = "b" }, "delivery.bounce_domain"},
		{"no workers", func(c *Config) { c.Delivery.Workers = 0 }, "delivery.workers"},
		{"no delay", func(c *Config) { c.DelayAfter = 0 }, "delay_after"},
		{"no retention", func(c *Config) { c.RetentionDays = 0 }, "retention_days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.field+":") {
				t.Fatalf("Validate: %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := DefaultConfig()
	if c.SMTP.Listen != "127.0.0.1:2525" || c.Upstream.TLS != TLSStartTLS || c.DelayAfter != 3*time.Hour ||
		c.RetentionDays != 30 || c.Delivery.MaxLifetime != 5*24*time.Hour {
		t.Errorf("defaults differ from SPEC section 10: %+v", c)
	}
	if c.Upstream.Password.String() != "" {
		t.Errorf("empty password prints %q", c.Upstream.Password)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		kind   outbox.OutcomeKind
		code   int
		enh    string
		reason string
	}{
		{"user unknown", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, outbox.OutcomePermanent, 550, "5.1.1", "userunknown"},
		{"mailbox full", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "full"}, outbox.OutcomePermanent, 552, "5.2.2", "mailboxfull"},
		{"plain 554", &smtp.SMTPError{Code: 554, Message: "no"}, outbox.OutcomePermanent, 554, "", "rejected"},
		{"greylisted", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}, outbox.OutcomeTemporary, 451, "4.7.1", ""},
		{"service closing", &smtp.SMTPError{Code: 421, Message: "bye"}, outbox.OutcomeTemporary, 421, "", ""},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, outbox.OutcomeTemporary, 0, "", ""},
		{"wrapped reply", errors.Join(errors.New("ctx"), &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}}), outbox.OutcomePermanent, 550, "5.7.1", "rejected"},
		{"unknown", io.ErrUnexpectedEOF, outbox.OutcomeTemporary, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := classify(tt.err)
			if o.Kind != tt.kind || o.Code != tt.code || o.Enhanced != tt.enh || o.Reason != tt.reason {
				t.Errorf("classify = %+v, want %s %d %q %q", o, tt.kind, tt.code, tt.enh, tt.reason)
			}
		})
	}
}

func TestReadHeaderSection(t *testing.T) {
	tests := []struct {
		name, in, header string
		err              error
	}{
		{"crlf", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\n", nil},
		{"lf", "A: 1\n\nbody\n", "A: 1\n\n", nil},
		{"no body", "A: 1\r\n", "A: 1\r\n", nil},
		{"folded", "A: 1\r\n 2\r\n\r\nx", "A: 1\r\n 2\r\n\r\n", nil},
		{"too large", strings.Repeat("X: y\r\n", maxHeaderBytes/6+1), "", errHeaderTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			h, err := readHeaderSection(br)
			if !errors.Is(err, tt.err) || string(h) != tt.header {
				t.Fatalf("header %q err %v, want %q %v", h, err, tt.header, tt.err)
			}
			if err == nil {
				rest, _ := io.ReadAll(br)
				if string(h)+string(rest) != tt.in {
					t.Errorf("header and rest do not make the input")
				}
			}
		})
	}
}

func TestMessageID(t *testing.T) {
	for in, want := range map[string]string{
		"<a@b>":         "a@b",
		" <a@b> (c) ":   "a@b",
		"a@b":           "a@b",
		"":              "",
		"<unterminated": "<unterminated",
		"x <y@z> <q@r>": "y@z",
	} {
		if got := messageID(in); got != want {
			t.Errorf("messageID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCredentialHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"Authorization": true, "X-Api-Token": true, "X-Helpdesk-Password": true, "X-API-Key": true,
		"Subject": false, "Authentication-Results": false, "X-Helpdesk-Ticket-ID": false,
	} {
		if got := credentialHeader(name); got != want {
			t.Errorf("credentialHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	l := &loginServer{auth: func(u, p string) error { gotUser, gotPass = u, p; return nil }}
	ch, done, err := l.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("first step: %q %v %v", ch, done, err)
	}
	ch, done, err = l.Next([]byte("helpdesk"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("second step: %q %v %v", ch, done, err)
	}
	if _, done, err = l.Next([]byte("pw")); !done || err != nil || gotUser != "helpdesk" || gotPass != "pw" {
		t.Fatalf("last step: %v %v %q %q", done, err, gotUser, gotPass)
	}
}
