# oauthrelay — `make help` lists the targets.
GO      ?= go
BIN     := bin/oauthrelay
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/oauthrelay/oauthrelay/internal/app.Version=$(VERSION)
# Tests get a generous overall timeout; the slowest package takes ~1 minute with -race.
TESTFLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help
.PHONY: help build run test lint

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/oauthrelay with the version embedded
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/oauthrelay

run: build ## Start the relay in front of the embedded sandbox provider (oauthrelay dev)
	./$(BIN) dev

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint ## Lint, then run every test with the race detector
	$(GO) test $(TESTFLAGS) ./...
