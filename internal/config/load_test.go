package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	SMTP struct {
		Listen        string   `yaml:"listen"`
		AllowNetworks []string `yaml:"allow_networks"`
		MaxRecipients int      `yaml:"max_recipients"`
	} `yaml:"smtp"`
	Upstream struct {
		Password Secret `yaml:"password"`
		Insecure bool   `yaml:"insecure_skip_verify"`
	} `yaml:"upstream"`
	Inline     inlined       `yaml:",inline"`
	DelayAfter time.Duration `yaml:"delay_after"`
	Endpoints  []struct {
		URL string `yaml:"url"`
	} `yaml:"endpoints"`
}

type inlined struct {
	RetentionDays int `yaml:"retention_days"`
}

func defaults() *testConfig {
	c := &testConfig{DelayAfter: 3 * time.Hour}
	c.SMTP.Listen = "127.0.0.1:2525"
	return c
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "smtp:\n  listen: 127.0.0.1:1000\n  max_recipients: 7\ndelay_after: 1h\nendpoints:\n  - url: http://127.0.0.1:9/\n")
	secretFile := writeFile(t, "s3cret\n")
	tests := []struct {
		name  string
		env   map[string]string
		flags []string
		check func(*testConfig) string
	}{
		{"file over defaults", nil, nil, func(c *testConfig) string {
			if c.SMTP.Listen != "127.0.0.1:1000" || c.SMTP.MaxRecipients != 7 || c.DelayAfter != time.Hour || len(c.Endpoints) != 1 {
				return "file values not applied"
			}
			return ""
		}},
		{"env over file", map[string]string{"ANSWER_RELAY_SMTP_LISTEN": "127.0.0.1:2000"}, nil, func(c *testConfig) string {
			if c.SMTP.Listen != "127.0.0.1:2000" || c.SMTP.MaxRecipients != 7 {
				return "env did not override only its setting"
			}
			return ""
		}},
		{"flag over env", map[string]string{"ANSWER_RELAY_SMTP_LISTEN": "127.0.0.1:2000"}, []string{"-smtp.listen", "127.0.0.1:3000"}, func(c *testConfig) string {
			if c.SMTP.Listen != "127.0.0.1:3000" {
				return "flag did not win"
			}
			return ""
		}},
		{"env lists, durations, booleans", map[string]string{
			"ANSWER_RELAY_SMTP_ALLOW_NETWORKS":           "10.0.0.0/8, 192.168.0.0/16",
			"ANSWER_RELAY_DELAY_AFTER":                   "90m",
			"ANSWER_RELAY_UPSTREAM_INSECURE_SKIP_VERIFY": "true",
		}, nil, func(c *testConfig) string {
			if !reflect.DeepEqual(c.SMTP.AllowNetworks, []string{"10.0.0.0/8", "192.168.0.0/16"}) || c.DelayAfter != 90*time.Minute || !c.Upstream.Insecure {
				return "typed env values wrong"
			}
			return ""
		}},
		{"_FILE variant", map[string]string{"ANSWER_RELAY_UPSTREAM_PASSWORD_FILE": secretFile}, nil, func(c *testConfig) string {
			if c.Upstream.Password.Reveal() != "s3cret" {
				return "secret not read from file"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			fs := Flags("test", c)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			if err := Load(c, Source{File: file, Env: envOf(tt.env), Flags: fs}); err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"unknown key", "smtp:\n  lisen: x\n", nil, "lisen"},
		{"wrong type in file names the line", "smtp:\n  max_recipients: many\n", nil, "line 2"},
		{"bad duration in env", "", map[string]string{"ANSWER_RELAY_DELAY_AFTER": "soon"}, "ANSWER_RELAY_DELAY_AFTER"},
		{"bad integer in env", "", map[string]string{"ANSWER_RELAY_SMTP_MAX_RECIPIENTS": "1e9x"}, "ANSWER_RELAY_SMTP_MAX_RECIPIENTS"},
		{"missing _FILE", "", map[string]string{"ANSWER_RELAY_UPSTREAM_PASSWORD_FILE": "/nonexistent/x"}, "ANSWER_RELAY_UPSTREAM_PASSWORD_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := Source{Env: envOf(tt.env)}
			if tt.file != "" {
				src.File = writeFile(t, tt.file)
			}
			err := Load(defaults(), src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestEnvNamesAreMechanical(t *testing.T) {
	got := map[string]bool{}
	for _, p := range Paths(defaults()) {
		got[EnvName(p)] = true
	}
	for _, want := range []string{"ANSWER_RELAY_SMTP_LISTEN", "ANSWER_RELAY_SMTP_ALLOW_NETWORKS", "ANSWER_RELAY_UPSTREAM_PASSWORD", "ANSWER_RELAY_DELAY_AFTER", "ANSWER_RELAY_RETENTION_DAYS"} {
		if !got[want] {
			t.Errorf("no setting reachable as %s (have %v)", want, got)
		}
	}
	if got["ANSWER_RELAY_ENDPOINTS"] {
		t.Error("a list of structs must be file-only")
	}
}

// FuzzLoad feeds arbitrary files and environment values to Load. Property:
// it never panics, and whenever it succeeds an environment value for
// smtp.listen overrides whatever the file said.
func FuzzLoad(f *testing.F) {
	f.Add("smtp:\n  listen: 127.0.0.1:1\n", "127.0.0.1:2", "5")
	f.Add("delay_after: 3h\nendpoints: [{url: x}]\n", "", "-1")
	f.Add("{{{", "x", "99999999999999999999")
	f.Add("smtp: [1,2]\n", "", "")
	f.Fuzz(func(t *testing.T, file, listen, maxRcpt string) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		c := defaults()
		env := map[string]string{"ANSWER_RELAY_SMTP_LISTEN": listen, "ANSWER_RELAY_SMTP_MAX_RECIPIENTS": maxRcpt}
		if err := Load(c, Source{File: p, Env: envOf(env), Flags: flag.NewFlagSet("x", flag.ContinueOnError)}); err != nil {
			return
		}
		if listen != "" && c.SMTP.Listen != listen {
			t.Errorf("env listen %q lost to %q", listen, c.SMTP.Listen)
		}
	})
}
