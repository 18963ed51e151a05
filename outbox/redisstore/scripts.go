package redisstore

import (
	"context"
	"embed"
	"strings"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// The Lua scripts, one per transition. Each file starts with its KEYS, ARGV
// and returns; the answer transitions share lua/prelude.lua.
var (
	scriptAccept          = load("accept", true)
	scriptRecordAttempt   = load("record_attempt", true)
	scriptMarkDelayed     = load("mark_delayed", true)
	scriptRecordReport    = load("record_report", true)
	scriptResend          = load("resend", true)
	scriptLease           = load("lease", false)
	scriptRelease         = load("release", false)
	scriptExtendLease     = load("extend_lease", false)
	scriptClaimEvents     = load("claim_events", false)
	scriptAckEvent        = load("ack_event", false)
	scriptRetryEvent      = load("retry_event", false)
	scriptExpire          = load("expire", false)
	scriptRecordUnmatched = load("record_unmatched", false)
	scriptTakeDeadLetter  = load("take_dead_letter", false)
)

func load(name string, prelude bool) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("redisstore: missing script " + name) // embedded at build time
	}
	if prelude {
		p, err := luaFiles.ReadFile("lua/prelude.lua")
		if err != nil {
			panic("redisstore: missing prelude")
		}
		src = append(append(p, '\n'), src...)
	}
	return redis.NewScript(string(src))
}

// scriptCall is one script run in a pipeline.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// runPipelined runs calls in one pipeline (one round trip per node) with
// EVALSHA, and once more with EVAL those a node did not know (NOSCRIPT:
// after a restart or a failover the script cache is empty). NOSCRIPT means
// the script did not run, so running it again is safe. It returns one
// command per call; their errors are the callers' to read.
func runPipelined(ctx context.Context, c redis.UniversalClient, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sc := range calls {
			cmds[i] = sc.script.EvalSha(ctx, p, sc.keys, sc.args...)
		}
		return nil
	})
	var again []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range again {
				cmds[i] = calls[i].script.Eval(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
	}
	return cmds
}
