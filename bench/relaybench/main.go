// Command relaybench runs the relay alone on a Redis store for bench/relay.sh:
// open submission from loopback, plain upstream, the given number of
// workers. It exists so the benchmark measures the relay, not the wiring of
// cmd/answer-relay; it prints "ready" when it listens and stops on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox/redisstore"
	"github.com/answer-relay/answer-relay/relay"
)

func main() { os.Exit(run()) }

func run() int {
	listen := flag.String("listen", "127.0.0.1:2525", "submission listener")
	upstream := flag.String("upstream", "", "upstream host:port (plain SMTP)")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379", "Redis URL")
	workers := flag.Int("workers", 8, "delivery workers")
	batch := flag.Int("batch", 4, "answers leased at once")
	verbose := flag.Bool("v", false, "log at info level")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "relaybench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "relaybench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts, err := redis.ParseURL(*redisURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		return 2
	}
	client := redis.NewClient(opts)
	store, err := redisstore.New(client, redisstore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		return 1
	}
	defer store.Close()

	cfg := relay.DefaultConfig()
	cfg.SMTP.Listen = *listen
	cfg.SMTP.AllowNetworks = []string{"127.0.0.0/8"}
	cfg.SMTP.MaxMessageBytes = 50 << 20
	cfg.Upstream.Addr = *upstream
	cfg.Upstream.TLS = relay.TLSNone
	cfg.Delivery.Workers = *workers
	cfg.Delivery.LeaseBatch = *batch
	cfg.Delivery.PollInterval = 50 * time.Millisecond
	r, err := relay.New(cfg, store, logger, prometheus.NewRegistry(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-r.Ready()
		fmt.Println("ready", r.Addr())
	}()
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		return 1
	}
	return 0
}
