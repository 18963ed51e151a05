package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/embedstore"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
)

// openedStore is the store a command runs on, with what closes it.
type openedStore struct {
	outbox.Store
	// Kind is "redis" or "embedded".
	Kind  string
	close func() error
}

// Close closes the store and, for Redis, the client it owns.
func (s *openedStore) Close() error { return s.close() }

// openStore opens the Redis store when redis_url is set and the embedded
// store in data_dir otherwise, and checks that it answers.
func openStore(ctx context.Context, cfg Config, clock outbox.Clock) (*openedStore, error) {
	var opened *openedStore
	if url := cfg.RedisURL.Reveal(); url != "" {
		client, err := redisstore.NewClient(url)
		if err != nil {
			return nil, fmt.Errorf("redis_url: %w", err)
		}
		s, err := redisstore.New(client, redisstore.Options{Clock: clock})
		if err != nil {
			client.Close()
			return nil, err
		}
		opened = &openedStore{Store: s, Kind: "redis", close: func() error { return errors.Join(s.Close(), client.Close()) }}
	} else {
		s, err := embedstore.Open(filepath.Join(cfg.DataDir, "outbox.db"), embedstore.Options{Clock: clock})
		if err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		opened = &openedStore{Store: s, Kind: "embedded", close: s.Close}
	}
	if err := opened.Ping(ctx); err != nil {
		opened.Close()
		return nil, fmt.Errorf("%s store: %w", opened.Kind, err)
	}
	return opened, nil
}
