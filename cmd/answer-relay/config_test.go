package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestConfigCheckPrintRedacts: the effective configuration printed by
// "config check -print" shows every setting but no credential.
func TestConfigCheckPrintRedacts(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	secret := newSecret(t)
	for k, v := range map[string]string{
		"ANSWER_RELAY_UPSTREAM_ADDR":     "127.0.0.1:587",
		"ANSWER_RELAY_UPSTREAM_USERNAME": "helpdesk",
		"ANSWER_RELAY_UPSTREAM_PASSWORD": "upstream-pass-123",
		"ANSWER_RELAY_SMTP_USERS":        "agent:" + string(hash),
		"ANSWER_RELAY_API_TOKENS":        "api-token-0123456789abc:owner",
		"ANSWER_RELAY_WEBHOOK_URL":       "https://hook-user:hook-pass@hooks.example.com/x?token=url-token-xyz",
		"ANSWER_RELAY_WEBHOOK_SECRET":    secret,
		"ANSWER_RELAY_REDIS_URL":         "redis://:redis-pass-456@127.0.0.1:6399/0",
		"ANSWER_RELAY_DATA_DIR":          t.TempDir(),
	} {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	if code := runConfig(context.Background(), []string{"check", "-print"}, &out, &errb); code != 0 {
		t.Fatalf("config check -print = %d: %s", code, errb.String())
	}
	printed := out.String()
	for _, leak := range []string{"upstream-pass-123", string(hash), "api-token-0123456789abc", "hook-pass", "url-token-xyz", secret, "redis-pass-456"} {
		if strings.Contains(printed, leak) {
			t.Errorf("config check -print shows %q:\n%s", leak, printed)
		}
	}
	for _, want := range []string{"127.0.0.1:587", "helpdesk", "agent:<redacted>", "hooks.example.com/x", "configuration OK"} {
		if !strings.Contains(printed, want) {
			t.Errorf("config check -print lacks %q:\n%s", want, printed)
		}
	}
}
