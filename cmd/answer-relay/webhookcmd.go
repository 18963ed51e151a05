package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/answer-relay/answer-relay/webhook"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	commands["webhook"] = command{"webhook endpoints: answer-relay webhook list | enable NAME | disable NAME [-config FILE]", runWebhook}
}

// runWebhook lists the configured webhook endpoints with their disabled
// flags, or re-enables (or disables) one: an endpoint that answered 410 Gone
// stays disabled, for every replica, until an operator enables it here.
// Dead letters it collected meanwhile are replayed through the API.
func runWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: answer-relay webhook list | enable NAME | disable NAME [-config FILE] [flags]")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	verb := args[0]
	cfg, fs, err := loadConfig("webhook "+verb, args[1:], stderr)
	if err != nil {
		return 2
	}
	cfg.derive()
	if err := cfg.Webhook.Validate(); err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 2
	}
	if !cfg.Webhook.Enabled() {
		fmt.Fprintln(stderr, "answer-relay: no webhook endpoint is configured")
		return 1
	}
	var name string
	switch {
	case verb == "list" && fs.NArg() == 0:
	case (verb == "enable" || verb == "disable") && fs.NArg() == 1:
		name = fs.Arg(0)
	default:
		return usage()
	}
	store, err := openStore(ctx, cfg, time.Now)
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 1
	}
	defer store.Close()
	d, err := webhook.NewDispatcher(cfg.Webhook, store, newLogger(cfg.Log, stderr), prometheus.NewRegistry(), time.Now)
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 1
	}
	if name != "" {
		if err := d.SetEndpointEnabled(ctx, name, verb == "enable"); err != nil {
			fmt.Fprintf(stderr, "answer-relay: %v\n", err)
			return 1
		}
	}
	eps, err := d.Endpoints(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 1
	}
	for _, ep := range eps {
		state := "enabled"
		if ep.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(stdout, "%-12s %-9s %s\n", ep.Name, state, ep.URL)
	}
	return 0
}
