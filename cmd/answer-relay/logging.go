package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogger returns the process logger for cfg, writing to w.
func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.Level) // validated before
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log.level: %q is not debug, info, warn or error", s)
	}
	return l, nil
}
