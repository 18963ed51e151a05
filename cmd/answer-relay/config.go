package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/answer-relay/answer-relay/api"
	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/relay"
	"github.com/answer-relay/answer-relay/relay/bounce"
	"github.com/answer-relay/answer-relay/webhook"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration of answer-relay: every package's
// section, gathered here. Environment variables and flags are derived from
// the yaml paths (internal/config).
type Config struct {
	// Relay holds the smtp, upstream and delivery sections and the
	// top-level delay_after and retention_days.
	Relay   relay.Config   `yaml:",inline"`
	Bounce  bounce.Config  `yaml:"bounce"`
	API     api.Config     `yaml:"api"`
	Webhook webhook.Config `yaml:"webhook"`
	// RedisURL selects the Redis store; empty selects the embedded store.
	RedisURL config.Secret `yaml:"redis_url"`
	// DataDir is where the embedded store keeps its file.
	DataDir string    `yaml:"data_dir"`
	Log     LogConfig `yaml:"log"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Format is "text" or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `yaml:"level"`
}

// defaultConfig returns the configuration before any file, environment
// variable or flag is applied.
func defaultConfig() Config {
	c := Config{
		Bounce:  bounce.Defaults(),
		Webhook: webhook.Defaults(),
		DataDir: "./data",
		Log:     LogConfig{Format: "text", Level: "info"},
	}
	c.Relay.Defaults()
	c.API.Defaults()
	return c
}

// validate derives the settings one section takes from another, then
// checks every section.
func (c *Config) validate() error {
	c.derive()
	errs := []error{c.Relay.Validate(), c.Bounce.Validate(), c.API.Validate(), c.Webhook.Validate()}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is neither text nor json", c.Log.Format))
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if c.RedisURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required when redis_url is empty"))
	}
	return errors.Join(errs...)
}

// derive fills the settings that one section takes from another.
func (c *Config) derive() {
	// The bounce domain is one setting for both sides: delivery writes VERP
	// addresses in it and the bounce listener takes mail for it.
	if c.Relay.Delivery.BounceDomain == "" {
		c.Relay.Delivery.BounceDomain = c.Bounce.Domain
	}
	if c.Bounce.Domain == "" {
		c.Bounce.Domain = c.Relay.Delivery.BounceDomain
	}
	// With a bounce domain, VERP is on unless a prefix says otherwise.
	if c.Relay.Delivery.VERPPrefix == "" && c.Relay.Delivery.BounceDomain != "" {
		c.Relay.Delivery.VERPPrefix = "bounce"
	}
	c.Bounce.VERPPrefix = c.Relay.Delivery.VERPPrefix
	if c.Bounce.VERPPrefix == "" {
		c.Bounce.VERPPrefix = "bounce"
	}
	if c.Webhook.APIBaseURL == "" {
		c.Webhook.APIBaseURL = c.API.BaseURL
	}
}

// loadConfig reads the configuration for a subcommand: -config FILE, then
// the environment, then the per-setting flags (flag > env > file).
func loadConfig(name string, args []string, stderr io.Writer) (Config, *flag.FlagSet, error) {
	cfg := defaultConfig()
	fs := config.Flags("answer-relay "+name, &cfg)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv(config.EnvPrefix+"CONFIG"), "YAML configuration file (env ANSWER_RELAY_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return cfg, fs, err
	}
	err := config.Load(&cfg, config.Source{File: *file, Env: os.Getenv, Flags: fs})
	return cfg, fs, err
}

func init() {
	commands["config"] = command{"check the configuration: answer-relay config check [-config FILE] [flags]", runConfig}
}

func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: answer-relay config check [-config FILE] [-print] [flags]")
		return 2
	}
	args = args[1:]
	print := false
	for i, a := range args {
		if a == "-print" || a == "--print" {
			print = true
			args = append(args[:i:i], args[i+1:]...)
			break
		}
	}
	cfg, _, err := loadConfig("config check", args, stderr)
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: configuration is invalid:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 1
	}
	if print {
		if err := printConfig(stdout, cfg); err != nil {
			fmt.Fprintln(stderr, "answer-relay:", err)
			return 1
		}
	}
	fmt.Fprintln(stdout, "configuration OK")
	return 0
}

// printConfig writes the effective configuration as YAML; secrets print as
// <redacted>, and so do the parts of settings that carry credentials
// without being secrets by type: webhook URLs' userinfo and query, and the
// password hashes of smtp.users.
func printConfig(w io.Writer, cfg Config) error {
	cfg.Webhook = cfg.Webhook.Redacted()
	users := make([]string, len(cfg.Relay.SMTP.Users))
	for i, u := range cfg.Relay.SMTP.Users {
		name, _, _ := strings.Cut(u, ":")
		users[i] = name + ":<redacted>"
	}
	cfg.Relay.SMTP.Users = users
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return fmt.Errorf("print configuration: %w", err)
	}
	return enc.Close()
}
