# mensageria — common tasks. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build release run test lint fmt clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Debug build of every binary
	$(CARGO) build --bins

release: ## Release build of every binary
	$(CARGO) build --release --bins

run: release ## Run broker, proxy, server and client locally (no Docker); Ctrl-C stops them all
	@scripts/run-local.sh target/release

test: ## Build the binaries, then run every test (unit, integration, end-to-end)
	$(CARGO) build --bins
	$(CARGO) nextest run --workspace --no-fail-fast

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output
	$(CARGO) clean
