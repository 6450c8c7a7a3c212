# wecom-oidc — run `make help` for the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     := bin/wecom-oidc
LDFLAGS := -s -w -X main.version=$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/wecom-oidc
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/wecom-oidc

.PHONY: run
run: ## Start the provider in dev mode: simulated WeCom, demo client, database under ./data
	$(GO) run -ldflags "-X main.version=$(VERSION)" ./cmd/wecom-oidc dev

.PHONY: test
test: ## Run every test, with the race detector
	$(GO) test -race -count=1 ./...

.PHONY: interop
interop: build ## Test against openid-client, an OpenID-certified relying party (needs Node 20+, npm)
	cd interop/openid-client && npm ci --no-audit --no-fund --prefer-offline && node --test

.PHONY: e2e
e2e: build browser ## Drive Chromium through a PKCE single-page app and the dev demo (Node 20+, npm); pictures in e2e/screenshots
	cd e2e && npm ci --no-audit --no-fund --prefer-offline && \
		timeout -k 10 600 node --test --test-concurrency=1 --test-timeout=60000 tests/*.test.mjs

.PHONY: screenshots
screenshots: browser ## Render the chooser and error pages in Chromium (zh, en) into ./screenshots
	SCREENSHOT_DIR=$(CURDIR)/screenshots $(GO) test -count=1 -tags screenshots -run TestScreenshots -v ./provider

.PHONY: browser
browser: ## Install Debian's chromium and a CJK font when missing (needs root)
	@if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi 'wenquanyi\|wqy'; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; \
	fi

.PHONY: lint
lint: fmt-check ## gofmt and go vet
	$(GO) vet ./...

.PHONY: fmt-check
fmt-check: ## Fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: clean
clean: ## Remove build output (not ./data)
	rm -rf bin
