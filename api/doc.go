// Package api serves answer-relay's HTTP API (SPEC section 6) on echo: the
// delivery status indicator, the outbox details and the delivery report of
// an answer, the outbox list, bounce intake, resend, unmatched bounces,
// dead-lettered webhook events, the meaning of enhanced status codes, and,
// outside /api, /metrics, /healthz and /readyz. An OpenAPI 3 document
// (openapi.yaml, embedded) describes every route and is served at
// /api/v1/openapi.yaml.
//
// It implements:
//
//   - RFC 6750 section 2.1 (Bearer tokens in the Authorization header) and
//     section 3 (the WWW-Authenticate challenge with error="invalid_token" or
//     error="insufficient_scope"); each token has a role (owner, admin,
//     agent, service) and tokens are compared in constant time;
//   - RFC 9457 (problem details): every error is application/problem+json
//     with type, title, status, detail and instance (section 3.1), and
//     validation errors carry an "errors" extension member (section 3.2)
//     naming the offending field;
//   - RFC 9110 section 15.5.11 (410 Gone) for details and reports older than
//     retention_days;
//   - RFC 3463 (enhanced mail system status codes) for GET
//     /api/v1/status-codes/{code} and the report's explanation, with the
//     texts of package dsn;
//   - RFC 8288 (Link header, rel="next") beside the next_cursor of every
//     list.
//
// The package talks to the store through the small Store interface declared
// here, and to bounce intake and webhook replay through Ingester and
// DeadLetterReplayer, which cmd/answer-relay wires; a nil one makes its
// endpoint answer 501 Not Implemented.
package api
