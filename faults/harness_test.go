//go:build linux

package faults

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.yaml.in/yaml/v3"
)

// full selects the counts of the issue (make faults); without it every case
// runs at a scale that fits CI.
var full = flag.Bool("faults", false, "run the fault suite at its full counts (make faults)")

// scaled returns the CI count, or the full one under -faults.
func scaled(ci, all int) int {
	if *full {
		return all
	}
	return ci
}

const (
	ownerToken = "faults-owner-token-0123456789"
	tagHeader  = "X-Answer-Relay-ID"
	seqHeader  = "X-Fault-Seq"
)

var (
	buildOnce sync.Once
	relayBin  string
	buildErr  error
)

// binary builds cmd/answer-relay once per test binary and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "answer-relay-faults-")
		if err != nil {
			buildErr = err
			return
		}
		relayBin = filepath.Join(dir, "answer-relay")
		goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		out, err := exec.Command(goBin, "build", "-o", relayBin, "github.com/answer-relay/answer-relay/cmd/answer-relay").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build answer-relay: %v", buildErr)
	}
	return relayBin
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if relayBin != "" {
		_ = os.RemoveAll(filepath.Dir(relayBin))
	}
	os.Exit(code)
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ---- the relay as a process ----

// relayOpts is what differs between the relays of the cases.
type relayOpts struct {
	// Name is the replica's name: its SMTP hostname and its EHLO name
	// upstream, so the sink can tell replicas apart.
	Name     string
	Upstream string
	// RedisURL selects the Redis store; empty selects the embedded one.
	RedisURL string
	Workers  int
	LeaseTTL time.Duration
	// DelayAfter defaults to an hour: no answer is delayed unless a case
	// wants it.
	DelayAfter    time.Duration
	RetrySchedule []string
	// Users, when set, replaces the loopback allow-list: clients must AUTH.
	Users         []string
	Bounce        bool
	WebhookURL    string
	WebhookSecret string
}

// relayProc is one `answer-relay serve` process and its fixed addresses;
// it can be killed and started again on the same configuration.
type relayProc struct {
	t                 *testing.T
	name              string
	dir               string
	cfgPath           string
	SMTP, API, Bounce string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	starts  int
	kills   int
	peakHWM atomic.Int64 // kB, the largest VmHWM seen of any run
}

// startRelay writes the configuration and starts the relay; it is stopped
// when the test ends.
func startRelay(t *testing.T, o relayOpts) *relayProc {
	t.Helper()
	binary(t)
	if o.Name == "" {
		o.Name = "relay-1"
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.DelayAfter == 0 {
		o.DelayAfter = time.Hour
	}
	if o.RetrySchedule == nil {
		o.RetrySchedule = []string{"1s"}
	}
	p := &relayProc{t: t, name: o.Name, dir: t.TempDir(), SMTP: freeAddr(t), API: freeAddr(t)}
	smtpCfg := map[string]any{
		"listen": p.SMTP, "hostname": o.Name + ".relay.test", "max_sessions": 500,
		"shutdown_timeout": "2s", "auth_failure_delay": "10ms",
	}
	if len(o.Users) > 0 {
		smtpCfg["users"] = o.Users
	} else {
		smtpCfg["allow_networks"] = []string{"127.0.0.1/32"}
	}
	cfg := map[string]any{
		"smtp": smtpCfg,
		"upstream": map[string]any{
			"addr": o.Upstream, "tls": "none", "hostname": o.Name,
			"dial_timeout": "2s", "command_timeout": "20s",
		},
		"delivery": map[string]any{
			"workers": o.Workers, "retry_schedule": o.RetrySchedule, "lease_ttl": o.LeaseTTL.String(),
			"poll_interval": "100ms", "sweep_interval": "200ms", "shutdown_timeout": "2s",
		},
		"delay_after": o.DelayAfter.String(),
		"data_dir":    filepath.Join(p.dir, "data"),
		"api":         map[string]any{"listen": p.API, "tokens": []string{ownerToken + ":owner"}},
		"log":         map[string]any{"level": "info", "format": "text"},
	}
	if o.RedisURL != "" {
		cfg["redis_url"] = o.RedisURL
	}
	if o.Bounce {
		p.Bounce = freeAddr(t)
		cfg["bounce"] = map[string]any{"listen": p.Bounce, "domain": "bounces.test"}
	}
	if o.WebhookURL != "" {
		cfg["webhook"] = map[string]any{
			"url": o.WebhookURL, "secret": o.WebhookSecret, "timeout": "2s",
			"backoff_min": "200ms", "backoff_max": "1s", "claim_ttl": "10s", "poll_interval": "20ms",
		}
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.cfgPath = filepath.Join(p.dir, "relay.yaml")
	if err := os.WriteFile(p.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cleanup)
	p.start()
	return p
}

// start runs the process and waits until its API and SMTP listener
// answer; it fails the test if the relay does not come up.
func (p *relayProc) start() {
	p.t.Helper()
	if err := p.launch(); err != nil {
		p.t.Fatal(err)
	}
}

// launch is start for goroutines other than the test's: it returns the
// error instead of failing the test.
func (p *relayProc) launch() error {
	logf, err := os.OpenFile(filepath.Join(p.dir, "relay.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(relayBin, "serve", "-config", p.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANSWER_RELAY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start relay %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	go p.sampleRSS(cmd.Process.Pid, exited)
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.starts++
	p.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("relay %s exited during start: %s", p.name, p.logTail(20))
		default:
		}
		if p.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay %s not ready within 30s: %s", p.name, p.logTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *relayProc) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.API + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	conn, err := net.DialTimeout("tcp", p.SMTP, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// sampleRSS records the process's VmHWM (its peak resident set) every
// 50 ms until it exits.
func (p *relayProc) sampleRSS(pid int, exited <-chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if kb := vmHWM(pid); kb > p.peakHWM.Load() {
			p.peakHWM.Store(kb)
		}
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

// vmHWM reads the peak resident set size of a process, in kB.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits until the
// process is gone.
func (p *relayProc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	p.kills++
}

// running reports whether the process is alive.
func (p *relayProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *relayProc) cleanup() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	if p.t.Failed() {
		p.t.Logf("relay %s log tail:\n%s", p.name, p.logTail(40))
	}
}

// logTail returns the last n lines of the relay's log.
func (p *relayProc) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "relay.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// answerView is what the accounting needs of GET /api/v1/answers/{id}/details.
type answerView struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// answer asks the relay's API about one answer.
func (p *relayProc) answer(id string) (answerView, error) {
	var v answerView
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.API+"/api/v1/answers/"+id+"/details", nil)
	req.Header.Set("Authorization", "Bearer "+ownerToken)
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return v, fmt.Errorf("GET %s: %d %s", id, resp.StatusCode, b)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// ---- the upstream: a counting sink ----

// delivery is one message the sink took.
type delivery struct {
	Replica    string // the EHLO name of the relay that sent it
	Seq        string // the load driver's sequence number
	Start, End time.Time
}

// sink is the upstream: an SMTP server that reads each message's tag
// header, discards the rest, and counts deliveries per answer id. It
// rejects recipients whose local part starts with "reject" (550 5.1.1),
// and can be taken down and brought back on the same port.
type sink struct {
	t    *testing.T
	Addr string

	mu       sync.Mutex
	srv      *smtp.Server
	byID     map[string][]delivery
	untagged int
	total    int
	bytes    int64
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{t: t, Addr: freeAddr(t), byID: map[string][]delivery{}}
	s.up()
	t.Cleanup(s.down)
	return s
}

// up starts listening again on the sink's address.
func (s *sink) up() {
	s.t.Helper()
	srv := smtp.NewServer(sinkBackend{s})
	srv.Domain = "sink.test"
	srv.MaxMessageBytes = 64 << 20
	srv.MaxLineLength = 10000
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableDSN = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("sink: listen %s: %v", s.Addr, err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// down closes the listener and every connection: the upstream is gone.
func (s *sink) down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (s *sink) deliveries() map[string][]delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]delivery, len(s.byID))
	for id, d := range s.byID {
		out[id] = append([]delivery(nil), d...)
	}
	return out
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

type sinkBackend struct{ s *sink }

func (b sinkBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &sinkSession{s: b.s, helo: c.Hostname()}, nil
}

type sinkSession struct {
	s     *sink
	helo  string
	start time.Time
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	ss.start = time.Now()
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(strings.ToLower(to), "reject") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	}
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad header"}
	}
	n, err := io.Copy(io.Discard, br)
	if err != nil {
		return err
	}
	d := delivery{Replica: ss.helo, Seq: h.Get(seqHeader), Start: ss.start, End: time.Now()}
	id := h.Get(tagHeader)
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.total++
	ss.s.bytes += n
	if id == "" {
		ss.s.untagged++
		return nil
	}
	ss.s.byID[id] = append(ss.s.byID[id], d)
	return nil
}

func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }

// ---- the helpdesk's webhook receiver ----

// hookEvent is one webhook the receiver took.
type hookEvent struct {
	ID   string
	Type string
	Seq  int64
	At   time.Time // arrival
}

// hooks is a webhook receiver that verifies every signature with the
// Standard Webhooks library and records events per answer in arrival
// order; it can be taken down and brought back on the same port.
type hooks struct {
	t      *testing.T
	Addr   string
	Secret string
	wh     *standardwebhooks.Webhook

	mu       sync.Mutex
	srv      *http.Server
	byAnswer map[string][]hookEvent
	bad      int
	total    int
}

func startHooks(t *testing.T) *hooks {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	h := &hooks{t: t, Addr: freeAddr(t), Secret: secret, wh: wh, byAnswer: map[string][]hookEvent{}}
	h.up()
	t.Cleanup(h.down)
	return h
}

// URL is the receiver's endpoint.
func (h *hooks) URL() string { return "http://" + h.Addr + "/hook" }

func (h *hooks) up() {
	h.t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", h.Addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatalf("hooks: listen %s: %v", h.Addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 5 * time.Second}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (h *hooks) down() {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (h *hooks) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := h.wh.Verify(body, r.Header); err != nil {
		h.mu.Lock()
		h.bad++
		h.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p struct {
		Type string `json:"type"`
		Data struct {
			AnswerID string `json:"answer_id"`
			Seq      int64  `json:"seq"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.total++
	h.byAnswer[p.Data.AnswerID] = append(h.byAnswer[p.Data.AnswerID], hookEvent{ID: r.Header.Get("webhook-id"), Type: p.Type, Seq: p.Data.Seq, At: time.Now()})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hooks) events() map[string][]hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]hookEvent, len(h.byAnswer))
	for id, e := range h.byAnswer {
		out[id] = append([]hookEvent(nil), e...)
	}
	return out
}

// ---- the load driver: a helpdesk with several SMTP sessions ----

// loadSpec describes one run of the load driver.
type loadSpec struct {
	// Addrs are the relays' submission listeners; a session starts on
	// Addrs[i % len] and moves to the next one when a connection fails,
	// as a helpdesk behind a load balancer would.
	Addrs    []string
	Answers  int
	Sessions int
	// PerConn is how many messages a session sends on one connection
	// before QUIT (default 20).
	PerConn int
	// RejectEvery sends every n-th answer to a recipient the sink rejects
	// (0: none), so some answers end not_delivered.
	RejectEvery int
	// BodySize is the size of each message body (default 1 KiB).
	BodySize int
	// Within bounds the whole run.
	Within time.Duration
	// Rate paces the load in answers per second over all sessions (0:
	// as fast as the relay takes them), so a run lasts long enough to
	// meet its faults.
	Rate int
	// Auth, when set, is "user:password" for AUTH PLAIN.
	Auth string
}

// accepted is one answer the relay said 250 to.
type accepted struct {
	Seq  int
	Addr string
	// Dot is when the end of data was sent, Reply when the 250 came back.
	Dot, Reply time.Time
}

// loadResult is what the driver saw.
type loadResult struct {
	mu       sync.Mutex
	Accepted map[string]accepted
	// Deferred counts 4xx replies (the client tried again), ConnErrors
	// failures below SMTP (refused, reset, timed out).
	Deferred   int
	Other      int // 5xx or malformed replies: the answer was given up
	ConnErrors int
	Unsent     int // answers not accepted before Within ran out
	Elapsed    time.Duration
	replies    map[int]int // reply codes seen
}

func (r *loadResult) add(id string, a accepted) {
	r.mu.Lock()
	r.Accepted[id] = a
	r.mu.Unlock()
}

func (r *loadResult) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.Accepted)
}

// drive sends spec.Answers answers through the relays and returns what was
// accepted. A session whose message is refused with 4xx or whose
// connection fails sends the same answer again (a new answer for the
// relay), as a helpdesk does.
func drive(ctx context.Context, t *testing.T, spec loadSpec) *loadResult {
	t.Helper()
	if spec.PerConn == 0 {
		spec.PerConn = 20
	}
	if spec.BodySize == 0 {
		spec.BodySize = 1 << 10
	}
	if spec.Within == 0 {
		spec.Within = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Within)
	defer cancel()
	res := &loadResult{Accepted: map[string]accepted{}, replies: map[int]int{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range spec.Sessions {
		wg.Go(func() { driveSession(ctx, spec, i, start, &next, res) })
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

func driveSession(ctx context.Context, spec loadSpec, i int, start time.Time, next *atomic.Int64, res *loadResult) {
	var c *smtp.Client
	addrIdx := i % len(spec.Addrs)
	sentOnConn := 0
	closeConn := func(quit bool) {
		if c != nil {
			if quit {
				_ = c.Quit()
			}
			_ = c.Close()
			c = nil
		}
		sentOnConn = 0
	}
	defer closeConn(true)
	for {
		seq := int(next.Add(1))
		if seq > spec.Answers {
			return
		}
		if spec.Rate > 0 {
			sleepCtx(ctx, time.Until(start.Add(time.Duration(seq)*time.Second/time.Duration(spec.Rate))))
		}
		for {
			if ctx.Err() != nil {
				res.mu.Lock()
				res.Unsent++
				res.mu.Unlock()
				return
			}
			if c == nil {
				var err error
				c, err = dialSMTP(ctx, spec.Addrs[addrIdx], spec.Auth)
				if err != nil {
					res.mu.Lock()
					res.ConnErrors++
					res.mu.Unlock()
					addrIdx = (addrIdx + 1) % len(spec.Addrs)
					sleepCtx(ctx, 100*time.Millisecond)
					continue
				}
			}
			a, id, err := sendOne(c, spec, seq)
			if err == nil {
				a.Addr = spec.Addrs[addrIdx]
				res.add(id, a)
				sentOnConn++
				if sentOnConn >= spec.PerConn {
					closeConn(true)
				}
				break
			}
			var se *smtp.SMTPError
			res.mu.Lock()
			if errors.As(err, &se) {
				res.replies[se.Code]++
				if se.Code >= 400 && se.Code < 500 {
					res.Deferred++
				} else {
					res.Other++
				}
			} else {
				res.ConnErrors++
			}
			res.mu.Unlock()
			closeConn(false)
			if errors.As(err, &se) && se.Code >= 500 {
				break // a permanent refusal: the helpdesk gives up on it
			}
			if !errors.As(err, &se) {
				addrIdx = (addrIdx + 1) % len(spec.Addrs)
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func dialSMTP(ctx context.Context, addr, auth string) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 2 * time.Minute
	if err := c.Hello("helpdesk.test"); err != nil {
		_ = c.Close()
		return nil, err
	}
	if auth != "" {
		return nil, errors.New("faults: AUTH in the load driver is not needed by any case")
	}
	return c, nil
}

// bodyReader returns a body of about size bytes of 76-character lines.
func bodyReader(seq, size int) io.Reader {
	line := strings.Repeat(strconv.Itoa(seq%10), 74) + "\r\n"
	return io.LimitReader(&repeatReader{s: line}, int64(size))
}

type repeatReader struct {
	s   string
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.s[r.off:])
		n += c
		r.off = (r.off + c) % len(r.s)
	}
	return n, nil
}

// sendOne sends one answer on c and returns the id of the "queued as" reply.
func sendOne(c *smtp.Client, spec loadSpec, seq int) (accepted, string, error) {
	rcpt := fmt.Sprintf("customer%d@example.com", seq)
	if spec.RejectEvery > 0 && seq%spec.RejectEvery == 0 {
		rcpt = fmt.Sprintf("reject%d@example.com", seq)
	}
	if err := c.Mail("agent@helpdesk.test", nil); err != nil {
		return accepted{}, "", err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return accepted{}, "", err
	}
	w, err := c.Data()
	if err != nil {
		return accepted{}, "", err
	}
	fmt.Fprintf(w, "From: agent@helpdesk.test\r\nTo: %s\r\nSubject: Re: ticket %d\r\nMessage-ID: <seq-%d-%d@helpdesk.test>\r\n%s: %d\r\nX-Helpdesk-Ticket-ID: T-%d\r\n\r\n",
		rcpt, seq, seq, time.Now().UnixNano(), seqHeader, seq, seq)
	if _, err := io.Copy(w, bodyReader(seq, spec.BodySize)); err != nil {
		_ = w.Close()
		return accepted{}, "", err
	}
	a := accepted{Seq: seq, Dot: time.Now()}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return accepted{}, "", err
	}
	a.Reply = time.Now()
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return accepted{}, "", &smtp.SMTPError{Code: 599, Message: "250 without queued as: " + resp.StatusText}
	}
	return a, strings.TrimSpace(id), nil
}

// ---- accounting ----

// ledger is the account of one run: every accepted answer is at the sink
// or not_delivered with a reason, or it is lost.
type ledger struct {
	Accepted     int
	AtSink       int
	NotDelivered int
	Lost         int
	LostIDs      []string
	// Duplicates counts extra deliveries of one answer id at the sink; a
	// relay killed between the upstream's 250 and recording it sends the
	// answer again (at-least-once).
	Duplicates int
	// Concurrent counts answers two deliveries of which overlapped in
	// time: two senders at once, which leases must prevent.
	Concurrent int
	// Unacked counts answers at the sink for which the client never saw a
	// 250 (the relay died after storing, before replying): the helpdesk
	// sent it again, as a new answer.
	Unacked int
	// ByReplica counts first deliveries per sending replica.
	ByReplica map[string]int
}

// account waits up to drain for every accepted answer to reach the sink or
// end not_delivered, then counts. apis are the relays to ask.
func account(t *testing.T, res *loadResult, sk *sink, apis []*relayProc, drain time.Duration) ledger {
	t.Helper()
	pending := map[string]bool{}
	for id := range res.Accepted {
		pending[id] = true
	}
	nd := map[string]bool{}
	deadline := time.Now().Add(drain)
	for {
		got := sk.deliveries()
		for id := range pending {
			if len(got[id]) > 0 {
				delete(pending, id)
			}
		}
		for id := range pending {
			v, err := askAny(apis, id)
			if err == nil && v.Status == "not_delivered" && v.Reason != "" {
				nd[id] = true
				delete(pending, id)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Late duplicates (an expired lease of a killed relay) arrive within a
	// lease; give them time to show.
	time.Sleep(500 * time.Millisecond)
	got := sk.deliveries()
	l := ledger{Accepted: len(res.Accepted), NotDelivered: len(nd), ByReplica: map[string]int{}}
	for id := range res.Accepted {
		ds := got[id]
		if len(ds) > 0 {
			l.AtSink++
			l.Duplicates += len(ds) - 1
			l.ByReplica[ds[0].Replica]++
			if overlapping(ds) {
				l.Concurrent++
			}
		}
	}
	for id := range pending {
		l.Lost++
		l.LostIDs = append(l.LostIDs, id)
	}
	sort.Strings(l.LostIDs)
	for id, ds := range got {
		if _, ok := res.Accepted[id]; !ok && len(ds) > 0 {
			l.Unacked++
		}
	}
	return l
}

func askAny(apis []*relayProc, id string) (answerView, error) {
	var err error
	for _, p := range apis {
		if !p.running() {
			continue
		}
		var v answerView
		if v, err = p.answer(id); err == nil {
			return v, nil
		}
	}
	if err == nil {
		err = errors.New("no relay running")
	}
	return answerView{}, err
}

// overlapping reports whether any two deliveries overlap in time.
func overlapping(ds []delivery) bool {
	for i := range ds {
		for j := i + 1; j < len(ds); j++ {
			if ds[i].Start.Before(ds[j].End) && ds[j].Start.Before(ds[i].End) {
				return true
			}
		}
	}
	return false
}

// check fails the test on any loss and on concurrent senders, and logs the
// lost ids with what the relays say of them.
func (l ledger) check(t *testing.T, apis []*relayProc) {
	t.Helper()
	if l.Lost > 0 {
		for i, id := range l.LostIDs {
			if i == 10 {
				break
			}
			v, err := askAny(apis, id)
			t.Logf("lost %s: %+v %v", id, v, err)
		}
		t.Errorf("%d of %d accepted answers lost (neither at the upstream nor not_delivered)", l.Lost, l.Accepted)
	}
	if l.Concurrent > 0 {
		t.Errorf("%d answers were sent by two senders at once", l.Concurrent)
	}
	if l.AtSink+l.NotDelivered != l.Accepted {
		t.Errorf("accounted %d at the sink + %d not delivered, accepted %d", l.AtSink, l.NotDelivered, l.Accepted)
	}
}

// ---- figures ----

// figures is one line of docs/reliability.md, logged by every case and
// appended to $FAULTS_FIGURES when set (make faults sets it).
func figures(t *testing.T, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "case=%s scale=%s", t.Name(), map[bool]string{true: "full", false: "ci"}[*full])
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	line := b.String()
	t.Log("FIGURES " + line)
	if path := os.Getenv("FAULTS_FIGURES"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintln(f, time.Now().UTC().Format(time.RFC3339), line)
			_ = f.Close()
		}
	}
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func strconvF(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }

func decodeJSON(resp *http.Response, v any) error {
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %d %s", resp.Request.URL.Path, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
