package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
)

func TestConfigValidate(t *testing.T) {
	good := config.Secret("0123456789abcdef:owner")
	cases := []struct {
		name  string
		cfg   Config
		field string // "" for valid
	}{
		{"defaults", Config{}, ""},
		{"tokens", Config{Tokens: []config.Secret{good, "colon:in:token-0123456789:agent", "svc-0123456789abcdef:Service"}}, ""},
		{"base url", Config{BaseURL: "https://relay.example.com"}, ""},
		{"bad listen", Config{Listen: "8025"}, "api.listen"},
		{"no role", Config{Tokens: []config.Secret{"0123456789abcdef"}}, "api.tokens[0]"},
		{"bad role", Config{Tokens: []config.Secret{good, "0123456789abcdeg:root"}}, "api.tokens[1]"},
		{"short token", Config{Tokens: []config.Secret{"short:admin"}}, "api.tokens[0]"},
		{"duplicate", Config{Tokens: []config.Secret{good, "0123456789abcdef:agent"}}, "api.tokens[1]"},
		{"space", Config{Tokens: []config.Secret{"0123456789 abcdef:agent"}}, "api.tokens[0]"},
		{"relative base url", Config{BaseURL: "/relay"}, "api.base_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Defaults()
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "0123456789") {
				t.Fatalf("error shows the token: %v", err)
			}
		})
	}
	var c Config
	c.Defaults()
	if c.Listen != DefaultListen {
		t.Fatalf("default listen %q", c.Listen)
	}
	c.Tokens = []config.Secret{good}
	if s := fmt.Sprintf("%v %+v", c, c); strings.Contains(s, "0123456789") {
		t.Fatalf("config prints its token: %s", s)
	}
}

func TestAuthenticate(t *testing.T) {
	creds, err := parseTokens([]config.Secret{"owner-0123456789abc:owner", "agent-0123456789abc:agent", "svc-0123456789abcdef:service"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		token string
		want  Role
	}{
		{"owner-0123456789abc", RoleOwner},
		{"agent-0123456789abc", RoleAgent},
		{"svc-0123456789abcdef", RoleService},
		{"owner-0123456789ab", ""},
		{"owner-0123456789abcd", ""},
		{"", ""},
		{"owner-0123456789abc:owner", ""},
	}
	for _, tc := range cases {
		if got := authenticate(creds, tc.token); got != tc.want {
			t.Errorf("authenticate(%q) = %q, want %q", tc.token, got, tc.want)
		}
	}
	if got := authenticate(nil, "anything"); got != "" {
		t.Errorf("no credentials: %q", got)
	}
}

func TestSafeHeaders(t *testing.T) {
	cases := []struct {
		name, value, want string // want "" means dropped
	}{
		{"Authorization", "Bearer x", ""},
		{"Proxy-Authorization", "Basic x", ""},
		{"X-Api-Key", "k", ""},
		{"Authentication-Results", "mx; smtp.auth=joe", ""},
		{"Cookie", "a=b", ""},
		{"Received", "from h (Authenticated sender: joe) by relay", "from h (Authenticated sender: <redacted>) by relay"},
		{"X-Relay-Note", "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", "AUTH PLAIN <redacted>"},
		{"Subject", "need auth help", "need auth help"},
		{"From", "a@b.example", "a@b.example"},
	}
	for _, tc := range cases {
		got := safeHeaders([]outbox.Header{{Name: tc.name, Value: tc.value}})
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s kept: %+v", tc.name, got)
		case tc.want != "" && (len(got) != 1 || got[0].Value != tc.want):
			t.Errorf("%s: %+v, want %q", tc.name, got, tc.want)
		}
	}
}
