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
	verbs := []string{"%v", "%s", "%q", "%#v", "%+v"} // a variable format, as a log call would use
	for _, verb := range verbs {
		if got := fmt.Sprintf(verb, s); strings.Contains(got, "hunter2") {
			t.Errorf("%s printed %q", verb, got)
		}
	}
	for name, got := range map[string]string{
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
