# LLM gateway on Envoy. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
ENVOY       ?= $(VENV)/bin/envoy
PYTEST      ?= $(VENV)/bin/pytest
CARGO       ?= cargo
RLS_BIN     ?= target/release/ratelimit-service
E2E_ARGS    ?=

export RLS_BIN ENVOY VENV

.PHONY: help deps build fmt lint unit-test test e2e run bench validate-envoy

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install missing tools: redis-server, protoc, wrk (apt); wasm32-wasip1; Envoy + pytest in .venv
	@scripts/deps.sh

build: ## release builds: ratelimit-service, mock-provider, and the filter (.wasm)
	$(CARGO) build --release -p ratelimit-service -p mock-provider
	$(CARGO) build --release -p wasm-filter --target wasm32-wasip1

fmt: ## cargo fmt --all
	$(CARGO) fmt --all

lint: ## rustfmt check, clippy (workspace, and wasm-filter for wasm32-wasip1) with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p wasm-filter --target wasm32-wasip1 -- -D warnings

unit-test: ## cargo test --workspace
	$(CARGO) test --workspace

validate-envoy: deps build ## envoy --mode validate for every envoy/*.yaml (production example's mounts faked)
	@scripts/validate-envoy.sh

e2e: deps build ## end-to-end suite (real Envoy, Redis, service): pytest tests/e2e
	$(PYTEST) -q tests/e2e $(E2E_ARGS)

test: ## everything CI runs: deps, lint, unit tests, validate-envoy, e2e
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory validate-envoy
	@$(MAKE) --no-print-directory e2e

run: deps build ## demo: service (memory store) + Envoy on 127.0.0.1:10000; Ctrl-C stops both
	@scripts/run-demo.sh

bench: deps build ## benchmarks (bench/run.sh)
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	elif [ -f bench/run.sh ]; then bash bench/run.sh; \
	else echo "bench: bench/run.sh does not exist yet" >&2; exit 1; fi
