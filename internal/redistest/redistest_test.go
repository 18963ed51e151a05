package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/answer-relay/answer-relay/internal/redistest"
)

func TestServerRestartKeepsAOF(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t, redistest.WithAOF())
	if s.Addr() == "127.0.0.1:6379" {
		t.Fatal("must never use port 6379")
	}
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop() // a clean stop fsyncs the AOF
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping after Stop succeeded")
	}
	s.Restart()
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	// Kill loses at most the last second; wait for the everysec fsync.
	if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	s.Kill()
	s.Restart()
	if got, err := c.Get(ctx, "k2").Result(); err != nil || got != "v2" {
		t.Fatalf("after kill and restart: %q, %v", got, err)
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	if len(c.Addrs()) != 3 {
		t.Fatalf("addrs: %v", c.Addrs())
	}
	cl := c.Client()
	for _, k := range []string{"{a}x", "{b}x", "{c}x", "{d}x"} {
		if err := cl.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	n := 0
	for _, node := range c.Nodes() {
		size, err := node.Client().DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += int(size)
	}
	if n != 4 {
		t.Fatalf("keys over all nodes: %d, want 4", n)
	}
}

func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("failover takes a few seconds")
	}
	ctx := context.Background()
	sn := redistest.StartSentinel(t, 1)
	cl := sn.Client()
	if err := cl.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d replicas, %v", n, err)
	}
	sn.Master().Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		addr, err := sn.MasterAddr(ctx)
		if err == nil && addr == sn.Replicas()[0].Addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover: master %s, %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got string
	var err error
	for range 50 {
		if got, err = cl.Get(ctx, "k").Result(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != "v" {
		t.Fatalf("after failover: %q, %v", got, err)
	}
}
