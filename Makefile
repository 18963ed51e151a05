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
