package redisstore

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/answer-relay/answer-relay/outbox"
)

// NewClient returns a go-redis client for a Redis URL (the value of
// ANSWER_RELAY_REDIS_URL). The forms:
//
//	redis://[user:pass@]host:port[/db][?options]       a single node (go-redis ParseURL)
//	rediss://[user:pass@]host:port[/db][?options]      a single node over TLS
//	redis+sentinel://[user:pass@]host1:port,host2:port/mastername[/db]
//	                                                   the master named by Sentinel;
//	                                                   user and password are the master's
//	redis+cluster://[user:pass@]host1:port,host2:port  a Cluster, seeded by the nodes given
//
// Query options of the single-node form are those of go-redis ParseURL
// (dial_timeout, pool_size, ...). The caller closes the client.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redisstore: %w: redis URL without a scheme", outbox.ErrInvalid)
	}
	switch scheme {
	case "redis", "rediss":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w: %s", outbox.ErrInvalid, redactedErr(err, rawURL))
		}
		return redis.NewClient(opt), nil
	case "redis+sentinel", "redis+cluster":
	default:
		return nil, fmt.Errorf("redisstore: %w: unknown redis URL scheme %q", outbox.ErrInvalid, scheme)
	}
	user, pass, hosts, path, err := splitMulti(rest)
	if err != nil {
		return nil, err
	}
	if scheme == "redis+cluster" {
		if path != "" && path != "/" {
			return nil, fmt.Errorf("redisstore: %w: a cluster URL has no path (a Cluster has only db 0)", outbox.ErrInvalid)
		}
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: hosts, Username: user, Password: pass}), nil
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return nil, fmt.Errorf("redisstore: %w: a sentinel URL needs /mastername[/db]", outbox.ErrInvalid)
	}
	db := 0
	if len(parts) == 2 {
		if db, err = strconv.Atoi(parts[1]); err != nil || db < 0 {
			return nil, fmt.Errorf("redisstore: %w: sentinel URL db %q", outbox.ErrInvalid, parts[1])
		}
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: parts[0], SentinelAddrs: hosts, Username: user, Password: pass, DB: db,
	}), nil
}

// splitMulti splits "[user:pass@]host1:port,host2:port[/path]".
func splitMulti(rest string) (user, pass string, hosts []string, path string, err error) {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest, path = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		info := rest[:i]
		rest = rest[i+1:]
		u, p, _ := strings.Cut(info, ":")
		if user, err = url.PathUnescape(u); err == nil {
			pass, err = url.PathUnescape(p)
		}
		if err != nil {
			return "", "", nil, "", fmt.Errorf("redisstore: %w: bad user info in redis URL", outbox.ErrInvalid)
		}
	}
	for h := range strings.SplitSeq(rest, ",") {
		if h == "" {
			continue
		}
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return "", "", nil, "", fmt.Errorf("redisstore: %w: redis URL without hosts", outbox.ErrInvalid)
	}
	return user, pass, hosts, path, nil
}

// redactedErr returns err's text with the URL's password removed.
func redactedErr(err error, rawURL string) string {
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "<redacted>")
		}
	}
	return msg
}
