package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/answer-relay/answer-relay/internal/config"
)

// Config is the relay's part of the answer-relay configuration. cmd/answer-relay
// embeds it in its top-level struct; environment names are derived from the
// yaml tags (ANSWER_RELAY_SMTP_LISTEN, ANSWER_RELAY_DELAY_AFTER, ...).
type Config struct {
	SMTP     SMTPConfig     `yaml:"smtp"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Delivery DeliveryConfig `yaml:"delivery"`
	// DelayAfter is how long an answer may wait for the upstream before the
	// sweeper marks it delayed (SPEC section 2).
	DelayAfter time.Duration `yaml:"delay_after"`
	// RetentionDays is how long answers are kept after acceptance; the
	// sweeper expires older ones that are no longer queued.
	RetentionDays int `yaml:"retention_days"`
}

// SMTPConfig configures the submission listener (RFC 6409).
type SMTPConfig struct {
	// Listen is the submission listener's address; STARTTLS is offered on
	// it when TLSCert and TLSKey are set.
	Listen string `yaml:"listen"`
	// ImplicitTLSListen is an optional listener speaking TLS from the first
	// byte (RFC 8314 section 3.3), usually port 465.
	ImplicitTLSListen string `yaml:"implicit_tls_listen"`
	// AllowNetworks lists the client networks (CIDRs or single addresses)
	// that may relay without AUTH. Everyone else must authenticate.
	AllowNetworks []string `yaml:"allow_networks"`
	// Users are "user:bcrypt-hash" pairs for AUTH PLAIN and LOGIN.
	Users []string `yaml:"users"`
	// SenderDomains optionally limits what an authenticated user may put
	// in MAIL FROM: "user:domain1 domain2" entries. A user without an
	// entry may send as anyone (SPEC section 9).
	SenderDomains []string `yaml:"sender_domains"`
	// TLSCert and TLSKey are PEM files of the listener's certificate.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Hostname is the name in the greeting and in generated Message-IDs;
	// empty means the machine's host name.
	Hostname string `yaml:"hostname"`
	// MaxMessageBytes is the largest message accepted (advertised as SIZE,
	// RFC 1870).
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxRecipients is the most RCPT commands accepted per message.
	MaxRecipients int `yaml:"max_recipients"`
	// MaxLineLength is the longest command or message line accepted, in
	// bytes; RFC 5321 section 4.5.3.1.6 sets 1000 as the least a server
	// must take.
	MaxLineLength int `yaml:"max_line_length"`
	// MaxSessions is the most concurrent sessions; further clients get 421.
	MaxSessions int `yaml:"max_sessions"`
	// SessionTimeout bounds one session's whole life.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// CommandTimeout is how long the listener waits for the next command
	// or line of data (RFC 5321 section 4.5.3.2 suggests 5 minutes).
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// AllowInsecureAuth permits AUTH without TLS, and only from loopback
	// clients (a helpdesk on the same host or in the same pod).
	AllowInsecureAuth bool `yaml:"allow_insecure_auth"`
	// AuthFailureDelay is the pause after a failed AUTH; it doubles with
	// each further failure from the same client address, up to a minute.
	AuthFailureDelay time.Duration `yaml:"auth_failure_delay"`
	// TicketHeader and AnswerHeader name the headers carrying the
	// helpdesk's ticket and answer references.
	TicketHeader string `yaml:"ticket_header"`
	AnswerHeader string `yaml:"answer_header"`
	// SubjectPattern is an optional regular expression read from the
	// Subject when the headers are missing: the group named "ticket" (or
	// the first group) is the ticket reference, a group named "answer" the
	// answer reference.
	SubjectPattern string `yaml:"subject_pattern"`
	// TagHeader is the header added to every accepted message, carrying
	// the answer id.
	TagHeader string `yaml:"tag_header"`
	// ShutdownTimeout bounds how long open sessions may finish on shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Upstream TLS modes.
const (
	TLSNone     = "none"     // plain SMTP
	TLSStartTLS = "starttls" // STARTTLS required (RFC 3207)
	TLSImplicit = "tls"      // TLS from the first byte (RFC 8314)
)

// UpstreamConfig configures the existing mail account's server.
type UpstreamConfig struct {
	// Addr is the server, host:port.
	Addr string `yaml:"addr"`
	// TLS is none, starttls or tls.
	TLS string `yaml:"tls"`
	// Username and Password are AUTH credentials; empty means no AUTH.
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	// InsecureSkipVerify accepts any certificate. Only for tests and
	// servers on the same host.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// CAFile is an optional PEM bundle trusted besides the system roots.
	CAFile string `yaml:"ca_file"`
	// Hostname is the name the relay gives in EHLO; empty means
	// SMTP.Hostname.
	Hostname string `yaml:"hostname"`
	// SecondaryAddr is an optional second server that takes over while
	// the primary fails; it uses the same TLS mode and credentials unless
	// the Secondary* fields say otherwise.
	SecondaryAddr     string        `yaml:"secondary_addr"`
	SecondaryTLS      string        `yaml:"secondary_tls"`
	SecondaryUsername string        `yaml:"secondary_username"`
	SecondaryPassword config.Secret `yaml:"secondary_password"`
	// FailoverPeriod is how long the secondary is used after the primary
	// failed before the primary is tried again.
	FailoverPeriod time.Duration `yaml:"failover_period"`
	// DialTimeout bounds connecting, TLS and the greeting.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// CommandTimeout bounds each command's reply, and the reply after the
	// data (RFC 5321 section 4.5.3.2 suggests up to 10 minutes there).
	CommandTimeout time.Duration `yaml:"command_timeout"`
}

// DeliveryConfig configures the delivery workers.
type DeliveryConfig struct {
	// Workers is the number of concurrent upstream connections.
	Workers int `yaml:"workers"`
	// RetrySchedule is the wait before each retry after a temporary
	// failure, as durations ("1m", "5m", ...); the last one repeats. A
	// random 0-20% is added to each so retries spread out.
	RetrySchedule []string `yaml:"retry_schedule"`
	// MaxLifetime is how long after queuing retries go on; then the
	// remaining recipients are not_delivered with reason "expired".
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// VERPPrefix, with BounceDomain, turns the envelope sender into
	// <prefix>+<answer id>@<bounce domain>.
	VERPPrefix   string `yaml:"verp_prefix"`
	BounceDomain string `yaml:"bounce_domain"`
	// NotifySuccess asks the upstream for success DSNs too
	// (NOTIFY=SUCCESS,FAILURE,DELAY), for the delivered status.
	NotifySuccess bool `yaml:"notify_success"`
	// LeaseTTL is how long a lease lasts unless extended: a working worker
	// extends its leases every third of it, so a crashed worker's answers
	// wait at most this long before another worker may take them.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// LeaseBatch is how many answers a worker leases at once.
	LeaseBatch int `yaml:"lease_batch"`
	// PollInterval is how often an idle worker looks for due answers
	// (answers accepted by this replica wake it at once).
	PollInterval time.Duration `yaml:"poll_interval"`
	// IdleTimeout is how long an unused upstream connection stays open.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxPerConnection is how many answers one upstream connection carries
	// before it is closed and a new one opened.
	MaxPerConnection int `yaml:"max_per_connection"`
	// SweepInterval is how often the sweeper marks delayed answers and
	// expires old ones.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// ShutdownTimeout bounds how long in-flight deliveries may finish on
	// shutdown; leases still held then are released.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// DefaultConfig returns the configuration of SPEC section 10 with every
// limit set; only Upstream.Addr and a way to submit (users or networks) are
// left to the operator.
func DefaultConfig() Config {
	var c Config
	c.Defaults()
	return c
}

// Defaults sets every field to its default, before a file, the environment
// and flags are applied over it.
func (c *Config) Defaults() {
	c.SMTP.Defaults()
	c.Upstream.Defaults()
	c.Delivery.Defaults()
	c.DelayAfter = 3 * time.Hour
	c.RetentionDays = 30
}

// Defaults sets the submission listener's defaults.
func (c *SMTPConfig) Defaults() {
	*c = SMTPConfig{
		Listen:           "127.0.0.1:2525",
		MaxMessageBytes:  25 << 20,
		MaxRecipients:    100, // RFC 5321 section 4.5.3.1.8: at least 100
		MaxLineLength:    2000,
		MaxSessions:      200,
		SessionTimeout:   30 * time.Minute,
		CommandTimeout:   5 * time.Minute,
		AuthFailureDelay: time.Second,
		TicketHeader:     "X-Helpdesk-Ticket-ID",
		AnswerHeader:     "X-Helpdesk-Answer-ID",
		TagHeader:        "X-Answer-Relay-ID",
		ShutdownTimeout:  10 * time.Second,
	}
}

// Defaults sets the upstream's defaults; Addr has none.
func (c *UpstreamConfig) Defaults() {
	*c = UpstreamConfig{
		TLS:            TLSStartTLS,
		FailoverPeriod: time.Minute,
		DialTimeout:    30 * time.Second,
		CommandTimeout: 5 * time.Minute,
	}
}

// Defaults sets the delivery workers' defaults.
func (c *DeliveryConfig) Defaults() {
	*c = DeliveryConfig{
		Workers:          4,
		RetrySchedule:    []string{"1m", "5m", "15m", "30m", "1h", "2h", "4h"},
		MaxLifetime:      5 * 24 * time.Hour,
		LeaseTTL:         5 * time.Minute,
		LeaseBatch:       4,
		PollInterval:     time.Second,
		IdleTimeout:      30 * time.Second,
		MaxPerConnection: 100,
		SweepInterval:    time.Minute,
		ShutdownTimeout:  20 * time.Second,
	}
}

// Validate checks every section; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if err := c.SMTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Upstream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Delivery.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DelayAfter <= 0 {
		errs = append(errs, errors.New("delay_after: must be positive"))
	}
	if c.RetentionDays < 1 {
		errs = append(errs, errors.New("retention_days: must be at least 1"))
	}
	return errors.Join(errs...)
}

var headerName = regexp.MustCompile(`^[!-9;-~]+$`) // RFC 5322 section 3.6.8 ftext

// Validate checks the submission listener's settings.
func (c SMTPConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("smtp.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	if c.ImplicitTLSListen != "" {
		if _, _, err := net.SplitHostPort(c.ImplicitTLSListen); err != nil {
			bad("implicit_tls_listen", "want host:port, got %q", c.ImplicitTLSListen)
		}
		if c.TLSCert == "" {
			bad("implicit_tls_listen", "needs smtp.tls_cert and smtp.tls_key")
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert", "smtp.tls_cert and smtp.tls_key go together")
	}
	if _, err := parseNetworks(c.AllowNetworks); err != nil {
		bad("allow_networks", "%v", err)
	}
	if _, err := parseUsers(c.Users); err != nil {
		bad("users", "%v", err)
	}
	if _, err := parseSenderDomains(c.SenderDomains); err != nil {
		bad("sender_domains", "%v", err)
	}
	if len(c.AllowNetworks) == 0 && len(c.Users) == 0 {
		bad("users", "no users and no smtp.allow_networks: nobody could submit")
	}
	if c.MaxMessageBytes <= 0 {
		bad("max_message_bytes", "must be positive")
	}
	if c.MaxRecipients <= 0 {
		bad("max_recipients", "must be positive")
	}
	if c.MaxLineLength < 1000 {
		bad("max_line_length", "must be at least 1000 (RFC 5321 section 4.5.3.1.6)")
	}
	if c.MaxSessions <= 0 {
		bad("max_sessions", "must be positive")
	}
	if c.SessionTimeout <= 0 {
		bad("session_timeout", "must be positive")
	}
	if c.CommandTimeout <= 0 {
		bad("command_timeout", "must be positive")
	}
	if c.AuthFailureDelay < 0 {
		bad("auth_failure_delay", "must not be negative")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	for field, v := range map[string]string{"ticket_header": c.TicketHeader, "answer_header": c.AnswerHeader, "tag_header": c.TagHeader} {
		if !headerName.MatchString(v) {
			bad(field, "not a header field name: %q", v)
		}
	}
	if _, err := compileSubject(c.SubjectPattern); err != nil {
		bad("subject_pattern", "%v", err)
	}
	return errors.Join(errs...)
}

// Validate checks the upstream's settings.
func (c UpstreamConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("upstream.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Addr == "" {
		bad("addr", "required: the existing mail account's server, host:port")
	} else if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr", "want host:port, got %q", c.Addr)
	}
	if !validTLSMode(c.TLS) {
		bad("tls", "want none, starttls or tls, got %q", c.TLS)
	}
	if (c.Username == "") != (c.Password == "") {
		bad("username", "upstream.username and upstream.password go together")
	}
	if c.SecondaryAddr != "" {
		if _, _, err := net.SplitHostPort(c.SecondaryAddr); err != nil {
			bad("secondary_addr", "want host:port, got %q", c.SecondaryAddr)
		}
	}
	if c.SecondaryTLS != "" && !validTLSMode(c.SecondaryTLS) {
		bad("secondary_tls", "want none, starttls or tls, got %q", c.SecondaryTLS)
	}
	if (c.SecondaryUsername == "") != (c.SecondaryPassword == "") {
		bad("secondary_username", "upstream.secondary_username and upstream.secondary_password go together")
	}
	if c.FailoverPeriod <= 0 {
		bad("failover_period", "must be positive")
	}
	if c.DialTimeout <= 0 {
		bad("dial_timeout", "must be positive")
	}
	if c.CommandTimeout <= 0 {
		bad("command_timeout", "must be positive")
	}
	return errors.Join(errs...)
}

func validTLSMode(s string) bool { return s == TLSNone || s == TLSStartTLS || s == TLSImplicit }

var verpPrefix = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate checks the delivery workers' settings.
func (c DeliveryConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("delivery.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Workers < 1 {
		bad("workers", "must be at least 1")
	}
	if _, err := parseSchedule(c.RetrySchedule); err != nil {
		bad("retry_schedule", "%v", err)
	}
	if c.MaxLifetime <= 0 {
		bad("max_lifetime", "must be positive")
	}
	if c.VERPPrefix != "" {
		if !verpPrefix.MatchString(c.VERPPrefix) {
			bad("verp_prefix", "letters, digits, '.', '_' and '-' only, got %q", c.VERPPrefix)
		}
		if c.BounceDomain == "" {
			bad("bounce_domain", "required with delivery.verp_prefix")
		}
	}
	if c.BounceDomain != "" && (strings.ContainsAny(c.BounceDomain, "@ <>") || !strings.Contains(c.BounceDomain, ".")) {
		bad("bounce_domain", "not a domain: %q", c.BounceDomain)
	}
	if c.LeaseTTL <= 0 {
		bad("lease_ttl", "must be positive")
	}
	if c.LeaseBatch < 1 {
		bad("lease_batch", "must be at least 1")
	}
	if c.PollInterval <= 0 {
		bad("poll_interval", "must be positive")
	}
	if c.IdleTimeout <= 0 {
		bad("idle_timeout", "must be positive")
	}
	if c.MaxPerConnection < 1 {
		bad("max_per_connection", "must be at least 1")
	}
	if c.SweepInterval <= 0 {
		bad("sweep_interval", "must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	return errors.Join(errs...)
}

// RetryDelays returns RetrySchedule parsed; call it on a validated config.
func (c DeliveryConfig) RetryDelays() []time.Duration {
	d, _ := parseSchedule(c.RetrySchedule)
	return d
}

func parseSchedule(ss []string) ([]time.Duration, error) {
	if len(ss) == 0 {
		return nil, errors.New("needs at least one duration")
	}
	out := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("not a positive duration: %q", s)
		}
		out = append(out, d)
	}
	return out, nil
}

func parseNetworks(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("not a CIDR or address: %q", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func parseUsers(ss []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(ss))
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		user, hash, ok := strings.Cut(s, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("want user:bcrypt-hash, got an entry without a user name")
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("user %q: the password is not a bcrypt hash", user)
		}
		if _, dup := out[user]; dup {
			return nil, fmt.Errorf("user %q listed twice", user)
		}
		out[user] = []byte(hash)
	}
	return out, nil
}

// parseSenderDomains reads "user:domain1 domain2" entries into each user's
// set of allowed sender domains, lower-cased.
func parseSenderDomains(ss []string) (map[string]map[string]bool, error) {
	out := make(map[string]map[string]bool, len(ss))
	for _, s := range ss {
		user, list, ok := strings.Cut(strings.TrimSpace(s), ":")
		domains := strings.Fields(list)
		if !ok || user == "" || len(domains) == 0 {
			return nil, fmt.Errorf("want user:domain1 domain2, got %q", s)
		}
		if out[user] != nil {
			return nil, fmt.Errorf("user %q listed twice", user)
		}
		out[user] = map[string]bool{}
		for _, d := range domains {
			if strings.ContainsAny(d, "@:") {
				return nil, fmt.Errorf("user %q: %q is not a domain", user, d)
			}
			out[user][strings.ToLower(d)] = true
		}
	}
	return out, nil
}

func compileSubject(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	if re.NumSubexp() == 0 {
		return nil, errors.New("needs a capturing group for the ticket reference")
	}
	return re, nil
}
