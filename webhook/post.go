package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/answer-relay/answer-relay/internal/config"
	"github.com/answer-relay/answer-relay/outbox"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// endpoint is one configured receiver, its secrets turned into signers.
type endpoint struct {
	name    string
	url     string
	signers []*standardwebhooks.Webhook
	events  map[outbox.EventType]bool // nil: every type
	timeout time.Duration
}

// wants reports whether the endpoint's filter takes events of type t.
func (e *endpoint) wants(t outbox.EventType) bool { return e.events == nil || e.events[t] }

// buildEndpoints turns a validated configuration into endpoints: url
// ("default", every type but ticket.reopen when reopen_url is set),
// reopen_url ("reopen", ticket.reopen only), then the list.
func buildEndpoints(cfg *Config) ([]*endpoint, error) {
	var eps []*endpoint
	add := func(name, u string, secrets []config.Secret, events []outbox.EventType, timeout time.Duration) error {
		e := &endpoint{name: name, url: u, timeout: timeout}
		if timeout == 0 {
			e.timeout = cfg.Timeout
		}
		for i, s := range secrets {
			wh, err := standardwebhooks.NewWebhook(s.Reveal())
			if err != nil {
				return fmt.Errorf("webhook: endpoint %q: secret %d: %w", name, i, err)
			}
			e.signers = append(e.signers, wh)
		}
		if len(events) > 0 {
			e.events = map[outbox.EventType]bool{}
			for _, t := range events {
				e.events[t] = true
			}
		}
		eps = append(eps, e)
		return nil
	}
	if cfg.URL != "" {
		var events []outbox.EventType
		if cfg.ReopenURL != "" {
			for _, t := range outbox.EventTypes {
				if t != outbox.EventTicketReopen {
					events = append(events, t)
				}
			}
		}
		if err := add(DefaultEndpoint, cfg.URL, splitSecrets(cfg.Secret), events, 0); err != nil {
			return nil, err
		}
	}
	if cfg.ReopenURL != "" {
		if err := add(ReopenEndpoint, cfg.ReopenURL, splitSecrets(cfg.Secret), []outbox.EventType{outbox.EventTicketReopen}, 0); err != nil {
			return nil, err
		}
	}
	for _, ec := range cfg.Endpoints {
		var events []outbox.EventType
		for _, t := range ec.Events {
			events = append(events, outbox.EventType(t))
		}
		if err := add(ec.Name, ec.URL, ec.Secrets, events, ec.Timeout); err != nil {
			return nil, err
		}
	}
	return eps, nil
}

// client posts webhooks. It never follows redirects (a POST redirected is
// a misconfigured endpoint, and following could leak the payload) and
// bounds every request by the endpoint's timeout through its context.
type client struct{ http *http.Client }

func newClient(workers int) *client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          4 * workers,
		MaxIdleConnsPerHost:   workers,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &client{http: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// maxResponseRead is how much of a reply body is read: enough for an error
// message in a dead letter and to reuse the connection after a short reply,
// never a large body a broken receiver sends.
const maxResponseRead = 1 << 10

// userAgent identifies the relay to receivers.
const userAgent = "answer-relay-webhook/1"

// result is what one POST came to. The zero result means the POST was cut
// short by the caller's context: nothing is known.
type result struct {
	outcome    string // Outcome*; "" when cut short
	status     int    // HTTP status; 0 on a network error
	reason     string // for logs and dead letters
	retryAfter time.Duration
	duration   time.Duration
}

// post signs and posts body to one endpoint and classifies the reply (the
// one place that decides temporary vs permanent):
//
//   - 2xx: success.
//   - 408 Request Timeout (RFC 9110 section 15.5.9), 429 Too Many Requests
//     (RFC 6585 section 4), 5xx, network errors and timeouts: retry, after
//     Retry-After (RFC 9110 section 10.2.3) if the reply has one.
//   - 410 Gone (RFC 9110 section 15.5.11): the receiver says the endpoint
//     is gone for good; disable it.
//   - any other 4xx: the receiver refuses this event; dead-letter it.
//   - anything else (3xx, which is not followed): unknown, so temporary.
func (d *Dispatcher) post(ctx context.Context, ep *endpoint, ev outbox.Event, body []byte, timeout time.Duration) result {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return result{outcome: OutcomeDeadLetter, reason: "bad request: " + unwrapURLError(err)}
	}
	// Standard Webhooks, "signature scheme": the id is stable across
	// retries, the timestamp is this attempt's, and there is one v1
	// signature per secret, separated by spaces.
	ts := d.clock()
	sigs := make([]string, 0, len(ep.signers))
	for _, s := range ep.signers {
		sig, err := s.Sign(ev.ID, ts, body)
		if err != nil {
			return result{outcome: OutcomeDeadLetter, reason: "signing failed: " + err.Error()}
		}
		sigs = append(sigs, sig)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(standardwebhooks.HeaderWebhookID, ev.ID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))

	start := time.Now()
	resp, err := d.client.http.Do(req)
	if err != nil {
		dur := time.Since(start)
		if ctx.Err() != nil {
			return result{} // stopping: nothing is known
		}
		d.metrics.Duration.Observe(dur.Seconds())
		reason := "post failed: " + unwrapURLError(err)
		if errors.Is(err, context.DeadlineExceeded) {
			reason = fmt.Sprintf("no reply within %s", timeout)
		}
		return result{outcome: OutcomeRetry, reason: reason, duration: dur}
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseRead))
	resp.Body.Close()
	dur := time.Since(start)
	d.metrics.Duration.Observe(dur.Seconds())

	res := result{status: resp.StatusCode, duration: dur}
	res.reason = fmt.Sprintf("HTTP %d", resp.StatusCode)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "")); s != "" {
		res.reason += ": " + truncate(s, 200)
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		res.outcome = OutcomeSuccess
	case code == http.StatusGone:
		res.outcome = OutcomeDisabled
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		res.outcome = OutcomeRetry
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.clock())
	case code >= 400:
		res.outcome = OutcomeDeadLetter
	default:
		res.outcome = OutcomeRetry
	}
	return res
}

// parseRetryAfter reads a Retry-After field (RFC 9110 section 10.2.3):
// delay-seconds or an HTTP-date. It returns 0 when there is none or it is
// malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// unwrapURLError drops the *url.Error wrapper, whose message quotes the
// whole URL, query tokens included.
func unwrapURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
