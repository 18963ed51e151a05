# The one test command (README.md): formatting, vet, staticcheck, then every
# test against real redis-server processes the tests start themselves.
GO ?= go
export PATH := $(PATH):$(shell $(GO) env GOPATH)/bin

.PHONY: test check build promtool

build:
	$(GO) build -o answer-relay ./cmd/answer-relay

check: promtool
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	staticcheck ./...

# Alert rules and their unit tests (Debian package prometheus).
promtool:
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts_test.yaml

test: check
	$(GO) test -count=1 -timeout 15m ./...

# The fault suite of issue 10 at its full counts (docs/reliability.md), then
# the fuzz targets of the SMTP session and the config loader for minutes
# each. Every case appends its figures to $FAULTS_FIGURES.
.PHONY: faults
faults:
	FAULTS_FIGURES=$${FAULTS_FIGURES:-/tmp/answer-relay-faults.txt} $(GO) test -count=1 -timeout 60m -v ./faults -faults
	$(GO) test -run '^$$' -fuzz '^FuzzSession$$' -fuzztime 3m ./relay
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 3m ./internal/config
