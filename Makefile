# oauthrelay — `make help` lists the targets.
GO      ?= go
BIN     := bin/oauthrelay
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/oauthrelay/oauthrelay/internal/app.Version=$(VERSION)
# Tests get a generous overall timeout; the slowest package takes ~1 minute with -race.
TESTFLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help
# The test Vault server: built once per machine from tools/vault (a separate
# module, so Vault's dependencies never enter go.mod); ~4 minutes when new.
VAULT_BIN := $(shell $(GO) env GOPATH)/bin/vault-dev

.PHONY: help build run test lint vault bench

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/oauthrelay with the version embedded
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/oauthrelay

run: build ## Start the relay in front of the embedded sandbox provider (oauthrelay dev)
	./$(BIN) dev

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: build ## Measure the relay against the direct path (writes bench-results.json)
	$(GO) run ./cmd/oauthrelay-bench -relay $(BIN) -out bench-results.json

vault: ## Build the Vault dev server used by the tests (skipped when present)
	@if "$(VAULT_BIN)" version >/dev/null 2>&1; then \
		echo "vault: $(VAULT_BIN) is present ($$("$(VAULT_BIN)" version))"; \
	else \
		echo "vault: building $(VAULT_BIN) from tools/vault (takes a few minutes once)"; \
		cd tools/vault && GOTOOLCHAIN=local GOFLAGS=-mod=mod $(GO) build -ldflags="-s -w" -o "$(VAULT_BIN)" . ; \
	fi

# The packages where sessions, reloads, pools and circuits run concurrently
# run three times with the race detector: races there show up only sometimes.
CONCURRENT_PKGS := ./internal/server/ ./internal/relay/ ./internal/upstream/ ./internal/limits/ ./internal/spool/ ./internal/queue/ ./internal/store/sqlite/ ./internal/store/postgres/

test: lint vault ## Lint, then run every test with the race detector (needs `make vault`)
	OAUTHRELAY_VAULT_BIN="$(VAULT_BIN)" $(GO) test $(TESTFLAGS) ./...
	OAUTHRELAY_VAULT_BIN="$(VAULT_BIN)" $(GO) test -race -count=2 -timeout 15m $(CONCURRENT_PKGS)
