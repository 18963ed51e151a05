package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestWebhookCommand disables and re-enables an endpoint through the CLI
// and checks the flag the dispatchers read is shared through the store.
func TestWebhookCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("ANSWER_RELAY_DATA_DIR", dir)
	t.Setenv("ANSWER_RELAY_WEBHOOK_URL", "http://127.0.0.1:9/hooks?token=secret")
	t.Setenv("ANSWER_RELAY_WEBHOOK_SECRET", newSecret(t))
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := runWebhook(context.Background(), args, &out, &errb)
		return out.String() + errb.String(), code
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"list"}, 0, "default      enabled"},
		{[]string{"disable", "default"}, 0, "default      disabled"},
		{[]string{"list"}, 0, "default      disabled"},
		{[]string{"enable", "default"}, 0, "default      enabled"},
		{[]string{"enable", "nosuch"}, 1, "nosuch"},
		{[]string{"enable"}, 2, "usage"},
		{[]string{"frobnicate"}, 2, "usage"},
	}
	for _, tt := range tests {
		out, code := run(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("webhook %v = %d %q, want %d and %q", tt.args, code, out, tt.code, tt.want)
		}
		if strings.Contains(out, "secret") {
			t.Errorf("webhook %v printed the URL's query: %q", tt.args, out)
		}
	}
}
