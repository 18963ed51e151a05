package redisstore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/internal/redistest"
	"github.com/answer-relay/answer-relay/outbox"
	"github.com/answer-relay/answer-relay/outbox/redisstore"
)

func TestNewClientParse(t *testing.T) {
	cases := []struct {
		name      string
		url       string
		wantAddrs []string // of a single-node or cluster client
		cluster   bool
		wantErr   error
	}{
		{name: "single node", url: "redis://127.0.0.1:7001/2", wantAddrs: []string{"127.0.0.1:7001"}},
		{name: "single node TLS", url: "rediss://user:pw@cache.example:7002", wantAddrs: []string{"cache.example:7002"}},
		{name: "sentinel", url: "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"},
		{name: "sentinel with db and auth", url: "redis+sentinel://u:p%40ss@127.0.0.1:26379/mymaster/3"},
		{name: "cluster", url: "redis+cluster://127.0.0.1:7001,127.0.0.1:7002", wantAddrs: []string{"127.0.0.1:7001", "127.0.0.1:7002"}, cluster: true},
		{name: "cluster with auth", url: "redis+cluster://u:p@127.0.0.1:7001", wantAddrs: []string{"127.0.0.1:7001"}, cluster: true},
		{name: "no scheme", url: "127.0.0.1:7001", wantErr: outbox.ErrInvalid},
		{name: "unknown scheme", url: "memcached://127.0.0.1:7001", wantErr: outbox.ErrInvalid},
		{name: "sentinel without master", url: "redis+sentinel://127.0.0.1:26379", wantErr: outbox.ErrInvalid},
		{name: "sentinel bad db", url: "redis+sentinel://127.0.0.1:26379/m/x", wantErr: outbox.ErrInvalid},
		{name: "cluster with db", url: "redis+cluster://127.0.0.1:7001/1", wantErr: outbox.ErrInvalid},
		{name: "cluster without hosts", url: "redis+cluster://", wantErr: outbox.ErrInvalid},
		{name: "bad single node", url: "redis://127.0.0.1:7001/notadb", wantErr: outbox.ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := redisstore.NewClient(tc.url)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("NewClient(%q) = %v, want %v", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient(%q): %v", tc.url, err)
			}
			defer c.Close()
			switch cl := c.(type) {
			case *redis.ClusterClient:
				if !tc.cluster || !slices.Equal(cl.Options().Addrs, tc.wantAddrs) {
					t.Errorf("cluster client with %v, want cluster=%v %v", cl.Options().Addrs, tc.cluster, tc.wantAddrs)
				}
			case *redis.Client:
				if tc.cluster {
					t.Errorf("got a single-node client, want a cluster client")
				}
				if tc.wantAddrs != nil && cl.Options().Addr != tc.wantAddrs[0] {
					t.Errorf("addr %s, want %s", cl.Options().Addr, tc.wantAddrs[0])
				}
			default:
				t.Errorf("unexpected client type %T", c)
			}
		})
	}
}

func TestNewClientRedactsPassword(t *testing.T) {
	_, err := redisstore.NewClient("redis://u:hunter2@127.0.0.1:7001/notadb")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v, want one without the password", err)
	}
}

// TestNewClientLive connects with the URL of each deployment form and runs
// an answer through the store.
func TestNewClientLive(t *testing.T) {
	cases := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"single node", func(t *testing.T) string { return redistest.Start(t).URL() }},
		{"cluster", func(t *testing.T) string { return redistest.StartCluster(t, 3).URL() }},
		{"sentinel", func(t *testing.T) string { return redistest.StartSentinel(t, 0).URL() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c, err := redisstore.NewClient(tc.url(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			s, err := redisstore.New(c, redisstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			a := newAnswer(t, time.Now())
			if err := s.Accept(ctx, a, strings.NewReader("hello")); err != nil {
				t.Fatal(err)
			}
			got, err := s.Lookup(ctx, outbox.ByAnswerRef, "R-1")
			if err != nil || got.ID != a.ID {
				t.Fatalf("Lookup: %v, %v", got, err)
			}
		})
	}
}
