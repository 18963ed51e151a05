package api

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/answer-relay/answer-relay/internal/config"
)

// DefaultListen is where the API listens unless configured: loopback only,
// so a fresh install exposes nothing.
const DefaultListen = "127.0.0.1:8025"

// MinTokenLength is the shortest token Validate accepts. Tokens are bearer
// credentials; 16 characters of a random string are hard to guess.
const MinTokenLength = 16

// Config configures the HTTP API; cmd/answer-relay gathers it under the
// "api" key of the configuration file.
type Config struct {
	// Listen is the host:port of the API, /metrics, /healthz and /readyz.
	Listen string `yaml:"listen"`
	// Tokens are "token:role" pairs; the role is the part after the last
	// colon and one of owner, admin, agent, service. They are secrets and
	// print as <redacted>. The config loader reads them from
	// ANSWER_RELAY_API_TOKENS (comma separated) or the file named by
	// ANSWER_RELAY_API_TOKENS_FILE (one a line).
	Tokens []config.Secret `yaml:"tokens"`
	// BaseURL is the API's public address (e.g. https://relay.example.com)
	// used in the links of responses; empty makes links relative.
	BaseURL string `yaml:"base_url"`
}

// Defaults fills unset fields with their defaults.
func (c *Config) Defaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
}

// Validate reports the first invalid field, named as in the configuration
// file ("api.tokens[1]"). It never prints a token.
func (c *Config) Validate() error {
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return fmt.Errorf("api.listen: %q is not host:port", c.Listen)
	}
	if _, err := parseTokens(c.Tokens); err != nil {
		return err
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("api.base_url: %q is not an absolute http or https URL", c.BaseURL)
		}
	}
	return nil
}

// parseTokens splits and checks the configured tokens.
func parseTokens(tokens []config.Secret) ([]credential, error) {
	seen := make(map[string]bool, len(tokens))
	out := make([]credential, 0, len(tokens))
	for i, s := range tokens {
		v := s.Reveal()
		cut := strings.LastIndexByte(v, ':')
		if cut < 0 {
			return nil, fmt.Errorf("api.tokens[%d]: not token:role", i)
		}
		token, role := v[:cut], Role(strings.ToLower(strings.TrimSpace(v[cut+1:])))
		if !role.valid() {
			return nil, fmt.Errorf("api.tokens[%d]: role %q is not one of owner, admin, agent, service", i, role)
		}
		if len(token) < MinTokenLength {
			return nil, fmt.Errorf("api.tokens[%d]: token shorter than %d characters", i, MinTokenLength)
		}
		if strings.ContainsAny(token, " \t,") {
			return nil, fmt.Errorf("api.tokens[%d]: token contains a space or comma", i)
		}
		if seen[token] {
			return nil, fmt.Errorf("api.tokens[%d]: token given twice", i)
		}
		seen[token] = true
		out = append(out, newCredential(token, role))
	}
	return out, nil
}
