package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/relay/bounce"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	commands["report"] = command{"take in returned bounces: answer-relay report ingest [-config FILE] FILE...", runReport}
}

// runReport ingests bounce files into the configured store with the same
// intake as the bounce listener and the API, printing one JSON result per
// file and line.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "ingest" {
		fmt.Fprintln(stderr, "usage: answer-relay report ingest [-config FILE] [flags] FILE...")
		return 2
	}
	cfg, fs, err := loadConfig("report ingest", args[1:], stderr)
	if err == nil {
		cfg.derive() // only the store and bounce sections matter here
		err = cfg.Bounce.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 2
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintln(stderr, "answer-relay: report ingest: no files")
		return 2
	}
	logger := newLogger(cfg.Log, stderr)
	store, err := openStore(ctx, cfg, time.Now)
	if err != nil {
		fmt.Fprintf(stderr, "answer-relay: %v\n", err)
		return 1
	}
	defer store.Close()
	observe := newEventObserver(prometheus.NewRegistry(), logger) // log each change; nothing scrapes a CLI
	intake := bounce.NewIntake(cfg.Bounce, outbox.Observed(store, observe), logger, nil, time.Now)
	enc := json.NewEncoder(stdout)
	status := 0
	for _, name := range files {
		res, err := ingestFile(ctx, intake, name)
		line := struct {
			File string `json:"file"`
			bounce.Result
			Error string `json:"error,omitempty"`
		}{File: filepath.Base(name), Result: res}
		if err != nil {
			line.Error, status = err.Error(), 1
		}
		if err := enc.Encode(line); err != nil {
			return 1
		}
	}
	return status
}

func ingestFile(ctx context.Context, intake *bounce.Intake, name string) (bounce.Result, error) {
	f, err := os.Open(name)
	if err != nil {
		return bounce.Result{}, err
	}
	defer f.Close()
	return intake.Ingest(ctx, f, bounce.Envelope{Source: outbox.SourceCLI})
}
