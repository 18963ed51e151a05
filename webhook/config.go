package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
)

// Names of the endpoints made from the top-level settings.
const (
	// DefaultEndpoint is the endpoint of webhook.url
	// (ANSWER_RELAY_WEBHOOK_URL).
	DefaultEndpoint = "default"
	// ReopenEndpoint is the endpoint of webhook.reopen_url, which takes
	// ticket.reopen instead of DefaultEndpoint.
	ReopenEndpoint = "reopen"
)

// Config is the webhook section of the configuration file.
type Config struct {
	// URL is one endpoint, named "default", settable by
	// ANSWER_RELAY_WEBHOOK_URL; it takes every event type (except
	// ticket.reopen when ReopenURL is set). Empty for none.
	URL string `yaml:"url"`
	// Secret signs posts to URL and ReopenURL: one or more whsec_ secrets
	// separated by commas or spaces (several while rotating: every post is
	// signed with each of them).
	Secret config.Secret `yaml:"secret"`
	// ReopenURL is the optional own URL of the ticket.reopen callback,
	// endpoint "reopen", signed with Secret.
	ReopenURL string `yaml:"reopen_url"`
	// Timeout bounds one POST to URL or ReopenURL, and to every endpoint
	// that sets no timeout of its own.
	Timeout time.Duration `yaml:"timeout"`
	// Endpoints are further endpoints, from the file only.
	Endpoints []EndpointConfig `yaml:"endpoints"`
	// MaxAge is how long after its first attempt an event is retried
	// before it is dead-lettered.
	MaxAge time.Duration `yaml:"max_age"`
	// APIBaseURL is the public base of the HTTP API, for the report links
	// in payloads ("https://relay.example.com"). Empty gives links
	// relative to the API's host.
	APIBaseURL string `yaml:"api_base_url"`
	// Workers bounds how many events one replica posts at the same time.
	Workers int `yaml:"workers"`

	// ClaimTTL is how long an event is claimed by one replica; a replica
	// that dies mid-delivery leaves its events to another one after this
	// long. It must exceed every endpoint's timeout by a margin.
	ClaimTTL time.Duration `yaml:"claim_ttl"`
	// PollInterval is how often an idle dispatcher asks the store for new
	// events; it bounds the latency from event to POST.
	PollInterval time.Duration `yaml:"poll_interval"`
	// BackoffMin and BackoffMax bound the exponential backoff between
	// attempts at one event (before jitter and Retry-After).
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// EndpointConfig is one webhook endpoint.
type EndpointConfig struct {
	// Name identifies the endpoint in dead letters, metrics of the API and
	// the disabled flag: lower-case letters, digits, '.', '_' and '-'.
	Name string `yaml:"name"`
	// URL is where events are posted, an absolute http or https URL. The
	// dispatcher's logs and Endpoints redact its userinfo and query.
	URL string `yaml:"url"`
	// Secrets sign every post (each secret gives one signature), so a new
	// secret can be added before the receiver switches and the old one
	// removed after. In whsec_<base64> form.
	Secrets []config.Secret `yaml:"secrets"`
	// Events is the filter: the event types this endpoint takes; empty for
	// all.
	Events []string `yaml:"events"`
	// Timeout bounds one POST; zero takes Config.Timeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults returns the configuration before the file, environment and
// flags are applied.
func Defaults() Config {
	return Config{
		Timeout: 10 * time.Second,
		MaxAge:  24 * time.Hour, // SPEC section 5
		Workers: 16,
		// Long enough for the slowest POST (10 s) plus the store writes
		// after it, short enough that a crashed replica's events move on
		// within a minute.
		ClaimTTL: time.Minute,
		// 20 ms keeps the idle latency from event to POST well under the
		// 50 ms target while costing one cheap store call per tick.
		PollInterval: 20 * time.Millisecond,
		// 5 s, 10 s, 20 s, ... 30 min: about 55 attempts in 24 h, dense
		// at first when the usual cause is a restart of the receiver.
		BackoffMin: 5 * time.Second,
		BackoffMax: 30 * time.Minute,
	}
}

// Enabled reports whether any endpoint is configured.
func (c *Config) Enabled() bool {
	return c.URL != "" || c.ReopenURL != "" || len(c.Endpoints) > 0
}

// endpointName is what an endpoint name may be: it appears in dead-letter
// ids ("<event id>/<endpoint>") and in URLs of the API.
var endpointName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Validate checks the configuration and returns an error naming the first
// bad field by its path, such as "webhook.endpoints[1].url".
func (c *Config) Validate() error {
	if c.Timeout <= 0 {
		return errors.New("webhook.timeout: must be positive")
	}
	if c.MaxAge <= 0 {
		return errors.New("webhook.max_age: must be positive")
	}
	if c.Workers < 1 || c.Workers > 1024 {
		return fmt.Errorf("webhook.workers: %d is not between 1 and 1024", c.Workers)
	}
	if c.PollInterval <= 0 {
		return errors.New("webhook.poll_interval: must be positive")
	}
	if c.BackoffMin <= 0 {
		return errors.New("webhook.backoff_min: must be positive")
	}
	if c.BackoffMax < c.BackoffMin {
		return errors.New("webhook.backoff_max: must not be below webhook.backoff_min")
	}
	if c.APIBaseURL != "" {
		if err := checkURL(c.APIBaseURL); err != nil {
			return fmt.Errorf("webhook.api_base_url: %w", err)
		}
	}
	for _, f := range []struct{ name, url string }{{"webhook.url", c.URL}, {"webhook.reopen_url", c.ReopenURL}} {
		if f.url == "" {
			continue
		}
		if err := checkURL(f.url); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if c.Secret == "" {
			return fmt.Errorf("webhook.secret: required when %s is set", f.name)
		}
	}
	if c.Secret != "" {
		for _, s := range splitSecrets(c.Secret) {
			if err := checkSecret(s); err != nil {
				return fmt.Errorf("webhook.secret: %w", err)
			}
		}
	}
	names := map[string]bool{DefaultEndpoint: c.URL != "", ReopenEndpoint: c.ReopenURL != ""}
	maxTimeout := c.Timeout
	for i, e := range c.Endpoints {
		field := fmt.Sprintf("webhook.endpoints[%d]", i)
		if !endpointName.MatchString(e.Name) {
			return fmt.Errorf("%s.name: %q must be 1 to 63 of a-z, 0-9, '.', '_', '-'", field, e.Name)
		}
		if names[e.Name] {
			return fmt.Errorf("%s.name: %q is used twice (%q and %q are taken by url and reopen_url)", field, e.Name, DefaultEndpoint, ReopenEndpoint)
		}
		names[e.Name] = true
		if err := checkURL(e.URL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
		if len(e.Secrets) == 0 {
			return fmt.Errorf("%s.secrets: at least one secret is required", field)
		}
		for j, s := range e.Secrets {
			if err := checkSecret(s); err != nil {
				return fmt.Errorf("%s.secrets[%d]: %w", field, j, err)
			}
		}
		for j, ev := range e.Events {
			if !slices.Contains(outbox.EventTypes, outbox.EventType(ev)) {
				return fmt.Errorf("%s.events[%d]: unknown event type %q", field, j, ev)
			}
		}
		if e.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative", field)
		}
		maxTimeout = max(maxTimeout, e.Timeout)
	}
	// A claim must outlive the slowest POST, or a second replica could
	// claim the event again while the first still posts it.
	if c.ClaimTTL < 2*maxTimeout {
		return fmt.Errorf("webhook.claim_ttl: %s must be at least twice the longest timeout (%s)", c.ClaimTTL, maxTimeout)
	}
	return nil
}

// checkURL accepts an absolute http or https URL.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, tokens and all: say less.
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", redactURL(raw))
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", redactURL(raw))
	}
	return nil
}

// secretPrefix starts every Standard Webhooks secret.
const secretPrefix = "whsec_"

// checkSecret accepts a whsec_ secret whose key is 24 to 64 bytes, the
// sizes the Standard Webhooks specification (section "Signature scheme")
// asks for. The error never contains the secret.
func checkSecret(s config.Secret) error {
	v := s.Reveal()
	if !strings.HasPrefix(v, secretPrefix) {
		return errors.New("a secret must have the form whsec_<base64>")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v, secretPrefix))
	if err != nil {
		return errors.New("the part after whsec_ is not standard base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return fmt.Errorf("the key is %d bytes; it must be 24 to 64", len(key))
	}
	return nil
}

// splitSecrets splits the top-level secret setting, which may hold several
// secrets separated by commas or white space.
func splitSecrets(s config.Secret) []config.Secret {
	var out []config.Secret
	for _, f := range strings.FieldsFunc(s.Reveal(), func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n'
	}) {
		out = append(out, config.Secret(f))
	}
	return out
}

// redactURL returns raw without its userinfo, query and fragment, for logs
// and errors: webhook URLs often carry tokens there.
// Redacted returns a copy of c fit to print: every URL without its
// userinfo and query, which often carry credentials. Secrets print as
// <redacted> by their type.
func (c Config) Redacted() Config {
	if c.URL != "" {
		c.URL = redactURL(c.URL)
	}
	if c.ReopenURL != "" {
		c.ReopenURL = redactURL(c.ReopenURL)
	}
	eps := make([]EndpointConfig, len(c.Endpoints))
	for i, ep := range c.Endpoints {
		ep.URL = redactURL(ep.URL)
		eps[i] = ep
	}
	c.Endpoints = eps
	return c
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if u.User != nil {
		r.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		r.RawQuery = "REDACTED"
	}
	return r.String()
}
