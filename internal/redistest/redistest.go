// Package redistest starts real redis-server processes for tests: a single
// node (optionally with an append-only file), a Cluster of several masters
// created with redis-cli --cluster create, and a Sentinel setup. Every server
// binds 127.0.0.1 on a free port (never 6379), keeps its files in
// t.TempDir(), and is stopped when the test ends. When redis-server is not
// installed the test is skipped, not failed.
//
// The servers are ordinary processes so tests can do to them what happens in
// production: Kill sends SIGKILL, Restart starts the same server again on the
// same port and directory, keeping what its append-only file holds.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a server may take to answer PING after it was
// started.
const startTimeout = 10 * time.Second

// Option changes how Start configures a server.
type Option func(*config)

type config struct {
	aof  bool
	args []string
}

// WithAOF turns on the append-only file (appendonly yes, appendfsync
// everysec), as a production deployment that must survive a restart has it.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithArgs passes extra configuration to redis-server as "--name value"
// pairs, e.g. WithArgs("--maxmemory", "10mb").
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is one redis-server process started by Start.
type Server struct {
	t    testing.TB
	dir  string
	port int
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	client redis.UniversalClient
}

// Start starts a redis-server on a free loopback port in a temporary
// directory and stops it when the test ends. It skips the test when
// redis-server is not installed.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	var c config
	for _, o := range opts {
		o(&c)
	}
	dir := t.TempDir()
	args := []string{"--save", "", "--appendonly", "no"}
	if c.aof {
		args = []string{"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"}
	}
	args = append(args, c.args...)
	var lastErr error
	for range 5 { // another process may take the port between probe and bind
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{t: t, dir: dir, port: port, args: append([]string{bin}, args...)}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.cleanup)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Dir is the server's working directory, where its append-only file lives.
func (s *Server) Dir() string { return s.dir }

// Client returns a client of the server, created on first use and closed
// when the test ends. It reconnects by itself after Restart.
func (s *Server) Client() redis.UniversalClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second})
	}
	return s.client
}

// Kill ends the server with SIGKILL, as a crash or an OOM kill would, and
// waits until it is gone. What the append-only file had not fsynced is lost.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Stop shuts the server down cleanly (SIGTERM) and waits until it is gone.
// With WithAOF it fsyncs the append-only file first.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart starts the server again on the same port and in the same
// directory, after Kill or Stop (it stops a running server first). With
// WithAOF the data written before survives, up to the last fsync.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	var err error
	for range 50 { // the port may linger briefly after the old process died
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
}

// start runs the server process and waits until it answers PING.
func (s *Server) start() error {
	args := append(append([]string(nil), s.args[1:]...),
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--protected-mode", "no", "--daemonize", "no", "--logfile", "")
	cmd, exited, err := spawn(s.args[0], args, filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err
	}
	if err := waitPing(s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w (log: %s)", err, tail(filepath.Join(s.dir, "redis.log")))
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

func (s *Server) cleanup() {
	s.mu.Lock()
	if s.client != nil {
		_ = s.client.Close()
		s.client = nil
	}
	s.mu.Unlock()
	s.Kill() // the data is thrown away with the directory: no need to save it
}

// spawn starts a process whose output goes to logPath, and returns a channel
// closed once the process has exited and been waited for.
func spawn(bin string, args []string, logPath string) (*exec.Cmd, chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	return cmd, exited, nil
}

// waitPing waits until the server at addr answers PING, or exited closes.
func waitPing(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		// While an AOF is loaded the server answers LOADING: keep waiting.
		select {
		case <-exited:
			return errors.New("redis-server exited during start")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING on %s within %s: %w", addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago and is not
// 6379. With bus set, port+10000 (the Cluster bus port) is free too.
func freePort(bus bool) (int, error) {
	for range 200 {
		var port int
		if bus {
			port = 20000 + rand.IntN(25000) // port+10000 stays below 65536
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		if port == 6379 || (bus && port+10000 == 6379) {
			_ = l.Close()
			continue
		}
		if bus {
			l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
			if err != nil {
				_ = l.Close()
				continue
			}
			_ = l2.Close()
		}
		_ = l.Close()
		return port, nil
	}
	return 0, errors.New("no free loopback port")
}

// requireBinary returns the path of an installed program, or skips the test.
func requireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("redistest: %s is not installed", name)
	}
	return p
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 8 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, " | ")
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }
