package webhook

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
)

// testSecret and testSecret2 are valid whsec_ secrets (32 bytes each).
const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="
	testSecret2 = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="
)

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := Defaults()
		c.URL = "https://hooks.example.com/in?token=x"
		c.Secret = testSecret
		c.Endpoints = []EndpointConfig{{Name: "audit", URL: "http://127.0.0.1:9/x", Secrets: []config.Secret{testSecret, testSecret2}, Events: []string{"ticket.reopen"}}}
		return c
	}
	cases := []struct {
		name   string
		change func(*Config)
		field  string // "" for valid
	}{
		{"defaults with endpoints", func(*Config) {}, ""},
		{"nothing configured", func(c *Config) { *c = Defaults() }, ""},
		{"rotation in the one secret", func(c *Config) { c.Secret = testSecret + ", " + testSecret2 }, ""},
		{"reopen url alone", func(c *Config) { c.URL = ""; c.ReopenURL = "https://x.example/reopen" }, ""},
		{"url without secret", func(c *Config) { c.Secret = "" }, "webhook.secret"},
		{"reopen url without secret", func(c *Config) { c.URL = ""; c.Secret = ""; c.ReopenURL = "https://x.example/r" }, "webhook.secret"},
		{"secret without prefix", func(c *Config) { c.Secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, "webhook.secret"},
		{"secret not base64", func(c *Config) { c.Secret = "whsec_!!!" }, "webhook.secret"},
		{"secret too short", func(c *Config) { c.Secret = "whsec_c2hvcnQ=" }, "webhook.secret"},
		{"bad second secret", func(c *Config) { c.Secret = testSecret + ",nope" }, "webhook.secret"},
		{"url not http", func(c *Config) { c.URL = "ftp://x.example/" }, "webhook.url"},
		{"url relative", func(c *Config) { c.URL = "/hooks" }, "webhook.url"},
		{"reopen url bad", func(c *Config) { c.ReopenURL = "mailto:x@example.com" }, "webhook.reopen_url"},
		{"api base bad", func(c *Config) { c.APIBaseURL = "relay.example.com" }, "webhook.api_base_url"},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, "webhook.timeout"},
		{"zero max age", func(c *Config) { c.MaxAge = 0 }, "webhook.max_age"},
		{"no workers", func(c *Config) { c.Workers = 0 }, "webhook.workers"},
		{"zero poll", func(c *Config) { c.PollInterval = 0 }, "webhook.poll_interval"},
		{"zero backoff", func(c *Config) { c.BackoffMin = 0 }, "webhook.backoff_min"},
		{"backoff max below min", func(c *Config) { c.BackoffMax = time.Second }, "webhook.backoff_max"},
		{"claim ttl too short", func(c *Config) { c.ClaimTTL = 15 * time.Second }, "webhook.claim_ttl"},
		{"claim ttl below endpoint timeout", func(c *Config) { c.Endpoints[0].Timeout = 40 * time.Second }, "webhook.claim_ttl"},
		{"endpoint name empty", func(c *Config) { c.Endpoints[0].Name = "" }, "webhook.endpoints[0].name"},
		{"endpoint name with slash", func(c *Config) { c.Endpoints[0].Name = "a/b" }, "webhook.endpoints[0].name"},
		{"endpoint name taken", func(c *Config) { c.Endpoints[0].Name = "default" }, "webhook.endpoints[0].name"},
		{"reopen name free without reopen url", func(c *Config) { c.Endpoints[0].Name = "reopen" }, ""},
		{"endpoint names twice", func(c *Config) { c.Endpoints = append(c.Endpoints, c.Endpoints[0]) }, "webhook.endpoints[1].name"},
		{"endpoint url", func(c *Config) { c.Endpoints[0].URL = "" }, "webhook.endpoints[0].url"},
		{"endpoint no secrets", func(c *Config) { c.Endpoints[0].Secrets = nil }, "webhook.endpoints[0].secrets"},
		{"endpoint bad secret", func(c *Config) { c.Endpoints[0].Secrets[1] = "whsec_x" }, "webhook.endpoints[0].secrets[1]"},
		{"endpoint bad event", func(c *Config) { c.Endpoints[0].Events = []string{"answer.sent", "answer.lost"} }, "webhook.endpoints[0].events[1]"},
		{"endpoint negative timeout", func(c *Config) { c.Endpoints[0].Timeout = -time.Second }, "webhook.endpoints[0].timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted a config with a bad %s", tc.field)
			}
			if !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			for _, s := range []string{testSecret, testSecret2, "token=x"} {
				if strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "https://h.example/a/b", "https://h.example/a/b"},
		{"query token", "https://h.example/in?token=s3cret", "https://h.example/in?REDACTED"},
		{"userinfo", "https://user:pw@h.example:8443/in", "https://REDACTED@h.example:8443/in"},
		{"unparsable", "http://[::1", "<unparsable URL>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactURL(tc.in); got != tc.want {
				t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestBuildEndpointsRouting(t *testing.T) {
	cases := []struct {
		name   string
		reopen string
		want   map[string][]string // endpoint → the event types it takes
	}{
		{"url takes everything", "", map[string][]string{
			DefaultEndpoint: {"answer.scheduled", "answer.sent", "answer.delayed", "answer.not_delivered", "answer.delivered", "ticket.reopen"},
			"audit":         {"ticket.reopen"},
		}},
		{"reopen url takes ticket.reopen", "https://r.example/reopen", map[string][]string{
			DefaultEndpoint: {"answer.scheduled", "answer.sent", "answer.delayed", "answer.not_delivered", "answer.delivered"},
			ReopenEndpoint:  {"ticket.reopen"},
			"audit":         {"ticket.reopen"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.URL, c.Secret, c.ReopenURL = "https://h.example/in", testSecret, tc.reopen
			c.Endpoints = []EndpointConfig{{Name: "audit", URL: "https://a.example/", Secrets: []config.Secret{testSecret}, Events: []string{"ticket.reopen"}, Timeout: time.Second}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			eps, err := buildEndpoints(&c)
			if err != nil {
				t.Fatal(err)
			}
			if len(eps) != len(tc.want) {
				t.Fatalf("%d endpoints, want %d", len(eps), len(tc.want))
			}
			for _, ep := range eps {
				var got []string
				for _, typ := range []string{"answer.scheduled", "answer.sent", "answer.delayed", "answer.not_delivered", "answer.delivered", "ticket.reopen"} {
					if ep.wants(outboxType(typ)) {
						got = append(got, typ)
					}
				}
				if strings.Join(got, ",") != strings.Join(tc.want[ep.name], ",") {
					t.Errorf("endpoint %s takes %v, want %v", ep.name, got, tc.want[ep.name])
				}
			}
			if eps[len(eps)-1].timeout != time.Second || eps[0].timeout != c.Timeout {
				t.Errorf("timeouts %s, %s: want the endpoint's own, else webhook.timeout", eps[len(eps)-1].timeout, eps[0].timeout)
			}
		})
	}
}

// TestEndpointErrorsAreConflicts: the API answers 409 for an endpoint that
// cannot take events now, because these errors match
// outbox.ErrIllegalTransition; a failed delivery does not.
func TestEndpointErrorsAreConflicts(t *testing.T) {
	for _, err := range []error{ErrUnknownEndpoint, ErrEndpointDisabled, fmt.Errorf("%w %q", ErrEndpointDisabled, "x")} {
		if !errors.Is(err, outbox.ErrIllegalTransition) {
			t.Errorf("%v does not match outbox.ErrIllegalTransition", err)
		}
	}
	if errors.Is(fmt.Errorf("%w: HTTP 500", ErrDeliveryFailed), outbox.ErrIllegalTransition) || errors.Is(ErrUnknownEndpoint, ErrEndpointDisabled) {
		t.Error("distinct errors match each other")
	}
}
