package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters without replicas, started by
// StartCluster.
type Cluster struct {
	t     testing.TB
	nodes []*Server

	mu     sync.Mutex
	client *redis.ClusterClient
}

// StartCluster starts masters redis-server processes in cluster mode (at
// least three, as redis-cli requires), joins them with
// redis-cli --cluster create, waits until every node reports cluster_state:ok
// and stops them when the test ends. It skips the test when redis-server or
// redis-cli is not installed.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	cli := requireBinary(t, "redis-cli")
	if masters < 3 {
		t.Fatalf("redistest: a cluster needs at least 3 masters, not %d", masters)
	}
	c := &Cluster{t: t}
	t.Cleanup(c.cleanup)
	for i := range masters {
		dir := t.TempDir()
		var err error
		for range 5 {
			port, perr := freePort(true)
			if perr != nil {
				t.Fatalf("redistest: %v", perr)
			}
			s := &Server{t: t, dir: dir, port: port, args: []string{bin,
				"--save", "", "--appendonly", "no",
				"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "2000"}}
			if err = s.start(); err == nil {
				c.nodes = append(c.nodes, s)
				break
			}
		}
		if err != nil {
			t.Fatalf("redistest: start cluster node %d: %v", i, err)
		}
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v: %s", err, out)
	}
	if err := c.waitOK(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return c
}

// waitOK waits until every node sees all slots served and agrees on the
// node list, so a client's first CLUSTER SLOTS gets the whole map.
func (c *Cluster) waitOK() error {
	deadline := time.Now().Add(startTimeout)
	for _, n := range c.nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.nodes))+"\r") {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				return fmt.Errorf("cluster node %s not ready: %v %q", n.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return nil
}

// Addrs lists the host:port of every node.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Nodes returns the node servers, e.g. to Kill one.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// URL is the cluster's redis+cluster:// URL, the form
// outbox/redisstore.NewClient accepts.
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs(), ",") }

// Client returns a cluster client, created on first use and closed when the
// test ends.
func (c *Cluster) Client() redis.UniversalClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: time.Second})
	}
	return c.client
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	if c.client != nil {
		_ = c.client.Close()
		c.client = nil
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(n.Kill)
	}
	wg.Wait()
}

// Sentinel is a master, its replicas and one sentinel watching them, started
// by StartSentinel.
type Sentinel struct {
	t        testing.TB
	master   *Server
	replicas []*Server
	sentinel *Server

	mu     sync.Mutex
	client *redis.Client
}

// MasterName is the name the sentinel knows the master by.
const MasterName = "mymaster"

// StartSentinel starts a master, replicas replicas of it and one sentinel
// (quorum 1, down-after 1s, so a killed master fails over within seconds
// when there is a replica to promote), and stops them when the test ends.
func StartSentinel(t testing.TB, replicas int, opts ...Option) *Sentinel {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	sn := &Sentinel{t: t}
	sn.master = Start(t, opts...)
	for range replicas {
		r := Start(t, append(opts, WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(sn.master.port)))...)
		sn.replicas = append(sn.replicas, r)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 5000\n"+
		"sentinel parallel-syncs %s 1\n", MasterName, sn.master.port, MasterName, MasterName, MasterName)
	if err := writeFile(conf, body); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	var err error
	for range 5 {
		port, perr := freePort(false)
		if perr != nil {
			t.Fatalf("redistest: %v", perr)
		}
		// The config file must come first; sentinel rewrites it as it learns.
		s := &Server{t: t, dir: dir, port: port, args: []string{bin, conf, "--sentinel"}}
		if err = s.start(); err == nil {
			sn.sentinel = s
			break
		}
	}
	if err != nil {
		t.Fatalf("redistest: start sentinel: %v", err)
	}
	t.Cleanup(sn.cleanup)
	if err := sn.waitReplicas(replicas); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return sn
}

// waitReplicas waits until the master has n replicas online (their first
// sync done) and the sentinel knows them, so a failover loses nothing that
// was written before StartSentinel returned.
func (sn *Sentinel) waitReplicas(n int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sn.SentinelAddr()})
	defer sc.Close()
	mc := redis.NewClient(&redis.Options{Addr: sn.master.Addr()})
	defer mc.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		rs, err := sc.Replicas(context.Background(), MasterName).Result()
		info, ierr := mc.Info(context.Background(), "replication").Result()
		if err == nil && ierr == nil && len(rs) >= n && strings.Count(info, "state=online") >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sentinel does not see %d replicas: %v", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Master is the server that was master at start.
func (sn *Sentinel) Master() *Server { return sn.master }

// Replicas are the servers that were replicas at start.
func (sn *Sentinel) Replicas() []*Server { return sn.replicas }

// SentinelAddr is the sentinel's host:port.
func (sn *Sentinel) SentinelAddr() string { return sn.sentinel.Addr() }

// URL is the redis+sentinel:// URL of the master, the form
// outbox/redisstore.NewClient accepts.
func (sn *Sentinel) URL() string { return "redis+sentinel://" + sn.SentinelAddr() + "/" + MasterName }

// Client returns a failover client that asks the sentinel for the master,
// created on first use and closed when the test ends.
func (sn *Sentinel) Client() redis.UniversalClient {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.client == nil {
		sn.client = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: MasterName, SentinelAddrs: []string{sn.SentinelAddr()}, DialTimeout: time.Second,
		})
	}
	return sn.client
}

// MasterAddr asks the sentinel which server is master now.
func (sn *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sn.SentinelAddr()})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

func (sn *Sentinel) cleanup() {
	sn.mu.Lock()
	if sn.client != nil {
		_ = sn.client.Close()
		sn.client = nil
	}
	sn.mu.Unlock()
	sn.sentinel.Kill()
}
