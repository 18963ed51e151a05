// Package faults is the fault suite of answer-relay (issue 10, SPEC
// sections 7 and 9): it runs `answer-relay serve` as real processes on
// loopback, drives load into them with a real SMTP client, injects faults
// (SIGKILL of a relay, a Redis crash and restart, the upstream or the
// webhook receiver going away, a replica lost among three, a Sentinel
// failover, a Cluster under load, open-relay probes, large messages) and
// then accounts for every answer that got a 250: it reached the upstream
// (counted at a test sink by its X-Answer-Relay-ID header) or ended
// not_delivered with a reason. Nothing accepted may be lost.
//
// The package has only tests. `go test ./faults` runs every case at a scale
// that fits CI; `make faults` (go test ./faults -faults) runs the full
// counts whose figures docs/reliability.md records.
package faults
