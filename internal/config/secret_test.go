package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	b, _ := json.Marshal(struct{ P Secret }{s})
	for name, got := range map[string]string{
		"%v": fmt.Sprintf("%v", s), "%s": fmt.Sprintf("%s", s), "%#v": fmt.Sprintf("%#v", s),
		"%+v struct": fmt.Sprintf("%+v", struct{ P Secret }{s}), "json": string(b),
	} {
		if got == "" || strings.Contains(got, "hunter2") {
			t.Errorf("%s printed %q", name, got)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
}
