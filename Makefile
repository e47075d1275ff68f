# mensageria — common tasks. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build release run test lint fmt clean up down logs k8s validate-deploy curve-keys fuzz soak bench bench-smoke

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## Debug build of every binary (libzmq is compiled too: needs cc, c++, make)
	@scripts/setup.sh build
	$(CARGO) build --bins

release: ## Release build of every binary
	@scripts/setup.sh build
	$(CARGO) build --release --bins

run: release ## Run broker, proxy, server and client locally (no Docker); Ctrl-C stops them all
	@scripts/run-local.sh target/release

test: ## Install missing test tools (scripts/setup.sh), build the binaries, run every test
	@scripts/setup.sh test
	$(CARGO) build --bins
	$(CARGO) nextest run --workspace --no-fail-fast

lint: ## rustfmt check, clippy with warnings as errors, rust-version vs the lockfile, unused dependencies
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-rust-version.sh
	command -v cargo-machete >/dev/null || $(CARGO) install --locked cargo-machete
	$(CARGO) machete

up: ## Build the image and start everything with Docker Compose (Prometheus, Grafana included)
	docker compose up -d --build
	@echo
	@echo "Grafana:    http://localhost:3000  (dashboard: mensageria overview)"
	@echo "Prometheus: http://localhost:9090"
	@echo "Broker:     tcp://localhost:5555   Proxy (subscribers): tcp://localhost:5558"
	@echo "Try: docker compose exec client client request hello"

down: ## Stop and remove the Compose stack, every profile (volumes are kept)
	docker compose --profile '*' down

logs: ## Follow the Compose stack's logs
	docker compose logs -f --tail=100

curve-keys: ## Generate CURVE keys into secrets/ (compose, Kubernetes); uses the image when cargo is absent
	scripts/curve-keys.sh

K8S ?= base
k8s: ## Regenerate deploy/k8s's copies of alerts/dashboards, render deploy/k8s/$(K8S) (base; K8S=overlays/monitoring, …)
	@python3 deploy/k8s/generate.py
	@if command -v kustomize >/dev/null; then kustomize build deploy/k8s/$(K8S); \
	elif command -v kubectl >/dev/null; then kubectl kustomize deploy/k8s/$(K8S); \
	else python3 deploy/validate/kustomize_build.py deploy/k8s/$(K8S); fi

validate-deploy: ## Static checks of Dockerfile, compose, Prometheus rules, dashboards, Kubernetes
	bash deploy/validate/static.sh

bench: release ## Benchmark against bare libzmq and NATS (about 5 min); Markdown tables, JSON in target/bench.json
	@scripts/setup.sh bench
	target/release/harness --json target/bench.json

bench-smoke: release ## Every benchmark workload briefly (CI keeps the harness from rotting; no timing asserted)
	@scripts/setup.sh bench
	target/release/harness --smoke

FUZZ_SECS ?= 60
fuzz: ## Fuzz the header codec with cargo-fuzz on nightly for FUZZ_SECS (default 60)
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && $(CARGO) +nightly fuzz run header -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1

SOAK_SECS ?= 600
soak: ## Whole system under load for SOAK_SECS (default 600), RSS per service every 10 s
	$(CARGO) build --release --bins
	MENSAGERIA_BIN_DIR=$(CURDIR)/target/release SOAK_SECS=$(SOAK_SECS) \
	  $(CARGO) test -p e2e --test reliability -- --ignored --exact soak::soak --nocapture

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output
	$(CARGO) clean
