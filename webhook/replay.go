package webhook

import (
	"context"
	"fmt"
	"time"

	"github.com/answer-relay/answer-relay/outbox"
)

// Replay posts a dead-lettered event to its endpoint now, out of the
// normal per-answer order (data.seq lets the receiver tell). On success the
// dead letter is gone; on failure it is put back with the new reason and
// the error wraps ErrDeliveryFailed. A dead letter of an endpoint that is
// no longer configured, or disabled, is put back untouched with
// ErrUnknownEndpoint or ErrEndpointDisabled. An unknown id is
// outbox.ErrNotFound. Two replays of one dead letter at once cannot both
// post: the store hands it to one of them.
func (d *Dispatcher) Replay(ctx context.Context, deadLetterID string) error {
	dl, err := d.store.TakeDeadLetter(ctx, deadLetterID)
	if err != nil {
		return fmt.Errorf("webhook: replay %s: %w", deadLetterID, err)
	}
	log := d.log.With("dead_letter_id", dl.ID, "event_id", dl.Event.ID, "endpoint", dl.Endpoint, "replay", true)
	putBack := func(cause error) error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		if err := d.store.AddDeadLetter(rctx, dl); err != nil {
			d.metrics.StoreErrors.Inc()
			log.Error("putting a dead letter back failed: it is lost", "err", err)
			return fmt.Errorf("webhook: replay %s: %w; putting it back failed: %w", dl.ID, cause, err)
		}
		return fmt.Errorf("webhook: replay %s: %w", dl.ID, cause)
	}
	ep := d.byName[dl.Endpoint]
	if ep == nil {
		return putBack(fmt.Errorf("%w %q", ErrUnknownEndpoint, dl.Endpoint))
	}
	disabled, err := d.store.EndpointDisabled(ctx, ep.name)
	if err != nil {
		return putBack(fmt.Errorf("reading the disabled flag: %w", err))
	}
	if disabled {
		return putBack(fmt.Errorf("%w: %q", ErrEndpointDisabled, ep.name))
	}
	body, err := NewPayload(dl.Event, d.cfg.APIBaseURL).marshal()
	if err != nil {
		return putBack(err)
	}
	res := d.post(ctx, ep, dl.Event, body, ep.timeout)
	if res.outcome == OutcomeSuccess {
		d.metrics.Deliveries.WithLabelValues(string(dl.Event.Type), OutcomeSuccess).Inc()
		log.Info("dead letter replayed", "status", res.status)
		return nil
	}
	if res.outcome == "" {
		res.reason = "replay cut short: " + context.Cause(ctx).Error()
	} else {
		d.metrics.Deliveries.WithLabelValues(string(dl.Event.Type), res.outcome).Inc()
	}
	if res.outcome == OutcomeDisabled {
		d.disable(ctx, ep, log)
	}
	dl.Attempts++
	dl.Reason = "replay: " + res.reason
	dl.At = d.clock()
	log.Warn("dead letter replay failed", "reason", res.reason)
	return putBack(fmt.Errorf("%w: %s", ErrDeliveryFailed, res.reason))
}

// EndpointStatus describes one configured endpoint, for the API.
type EndpointStatus struct {
	Name string `json:"name"`
	// URL is redacted: no userinfo, no query.
	URL string `json:"url"`
	// Events is the filter; empty for every type.
	Events   []outbox.EventType `json:"events,omitempty"`
	Timeout  time.Duration      `json:"timeout_ns"`
	Disabled bool               `json:"disabled"`
}

// Endpoints lists the configured endpoints with their disabled flags.
func (d *Dispatcher) Endpoints(ctx context.Context) ([]EndpointStatus, error) {
	out := make([]EndpointStatus, 0, len(d.endpoints))
	for _, ep := range d.endpoints {
		disabled, err := d.store.EndpointDisabled(ctx, ep.name)
		if err != nil {
			return nil, fmt.Errorf("webhook: endpoint %q: %w", ep.name, err)
		}
		st := EndpointStatus{Name: ep.name, URL: redactURL(ep.url), Timeout: ep.timeout, Disabled: disabled}
		for _, t := range outbox.EventTypes {
			if ep.events != nil && ep.events[t] {
				st.Events = append(st.Events, t)
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// SetEndpointEnabled enables an endpoint that a 410 disabled, or disables
// one, for every replica (others notice within a second). Events
// dead-lettered while it was disabled stay dead letters until replayed.
func (d *Dispatcher) SetEndpointEnabled(ctx context.Context, name string, enabled bool) error {
	if d.byName[name] == nil {
		return fmt.Errorf("%w %q", ErrUnknownEndpoint, name)
	}
	if err := d.store.SetEndpointDisabled(ctx, name, !enabled); err != nil {
		return fmt.Errorf("webhook: endpoint %q: %w", name, err)
	}
	d.setCached(name, !enabled)
	d.log.Info("webhook endpoint changed by operator", "endpoint", name, "enabled", enabled)
	return nil
}
