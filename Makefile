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
test: etcd ## Run every test, with the race detector (the etcd backend's against a real etcd)
	$(GO) test -race -count=1 ./...

.PHONY: etcd
etcd: ## Install Debian's etcd-server when missing (the etcd storage tests start their own; needs root)
	@if [ -z "$$ETCD_BIN" ] && ! command -v etcd >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; \
	fi

# make fuzz runs the fuzz targets one after the other (go test fuzzes one target per run), each for
# FUZZTIME. A failing input is written to the package's testdata/fuzz/<target>/, where every later
# `go test` runs it: commit it as the regression test. FUZZMINIMIZETIME bounds the shrinking of
# each new input (a count, so the slower targets do not spend their time there); raise it, e.g.
# to 60s, to shrink a failing input further.
# FUZZTIME is a count of executions (about 20 s for the slowest target here), not a duration: in
# Go 1.26 a duration can end a clean run with a bare "context deadline exceeded" failure and no
# failing input (golang/go#75804, a race in the fuzzing coordinator, fixed in Go 1.27).
FUZZTIME ?= 40000x
FUZZMINIMIZETIME ?= 100x
FUZZFLAGS = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME)

.PHONY: fuzz
fuzz: ## Fuzz /authorize, the WeCom callback, /oauth/token, WeCom's answers, the config, FUZZTIME (40000x) each
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzAuthorize$$' ./provider
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzWeComCallback$$' ./provider
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzTokenEndpoint$$' ./provider
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzWeComResponses$$' ./upstream/wecom
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzLoadConfig$$' ./cmd/wecom-oidc

.PHONY: crash
crash: ## SIGKILL the server under write load 3 times; every acknowledged write must survive
	$(GO) test -tags crash -count=1 -run TestCrashUnderWriteLoad -v ./cmd/wecom-oidc

# make bench: the Go benchmarks of the hot paths (BENCHTIME each), then the load generator against
# `wecom-oidc dev` on loopback (BENCHFLAGS: -concurrency, -duration, -check, -json FILE, …; run
# `go run ./cmd/wecom-oidc-bench -h`). docs/performance.md explains the figures.
BENCHTIME  ?= 1s
BENCHFLAGS ?= -check

.PHONY: bench
bench: build ## Measure: hot-path Go benchmarks, then logins/refresh/userinfo at 32 concurrent against the ceilings
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./keys ./storage/bolt ./upstream/wecom ./provider
	$(GO) run ./cmd/wecom-oidc-bench -server $(BIN) $(BENCHFLAGS)

.PHONY: soak
soak: build ## 10-minute mixed load: the database and the server's memory must end no larger than after minute one
	$(GO) run ./cmd/wecom-oidc-bench -server $(BIN) -warmup 3m -soak 10m -check

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
