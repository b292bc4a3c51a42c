# The one entry point. `make demo` and `make test` are the README's two commands.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

# Builds (once) and points at etcd, kube-apiserver, kube-controller-manager,
# kubectl and helm; see hack/tools.sh and hack/versions.env.
WITH_TOOLS = env_lines=$$(hack/tools.sh env) && eval "$$env_lines" &&
# The demo's share: the control plane and helm, no Prometheus, no podman.
WITH_DEMO_TOOLS = env_lines=$$(hack/tools.sh env demo) && eval "$$env_lines" &&
# podman and runc alone, for make image.
WITH_IMAGE_TOOLS = env_lines=$$(hack/tools.sh env image) && eval "$$env_lines" &&
# The controllers, built where the demo looks for them, with cargo's progress
# shown (the first build takes minutes).
BUILD_CONTROLLERS = echo '[demo] building the controllers (cargo)' && $(CARGO) build -p syncsecret-ccm -p syncsecret-manager &&

.PHONY: help tools demo up test unit bench chaos image manifests fmt lint ci

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

tools: ## Build the control-plane binaries into the cache (once).
	hack/tools.sh install

demo: ## Start a management and a tenant cluster, show a SyncSecret there, stop.
	$(WITH_DEMO_TOOLS) $(BUILD_CONTROLLERS) $(CARGO) run -p syncsecret-e2e --bin syncsecret-up -- --demo

up: ## Keep a local management and tenant cluster running until Ctrl-C.
	$(WITH_DEMO_TOOLS) $(BUILD_CONTROLLERS) $(CARGO) run -p syncsecret-e2e --bin syncsecret-up

test: ## Run every test (unit, generated-YAML drift, e2e on the real control plane, the images as containers).
	$(CARGO) test -p syncsecret-api
	$(WITH_TOOLS) hack/image.sh
	$(WITH_TOOLS) $(CARGO) test --workspace -- --nocapture

unit: ## The fast tier: unit, property and generated-YAML drift tests; no control plane.
	$(CARGO) test -p syncsecret-api
	$(CARGO) test --workspace --lib
	$(CARGO) test -p syncsecret-runtime --tests

BENCH_ARGS ?=
bench: ## Benchmark (release builds, 1k/10k objects over 1/4 tenants); appends to docs/benchmarks.md.
	$(WITH_TOOLS) $(CARGO) run --release -q -p syncsecret-e2e --bin syncsecret-bench -- $(BENCH_ARGS)

CHAOS_ARGS ?=
chaos: ## Chaos run (release builds; kill -9, API server restarts, etcd compaction; ~10 min); prints one summary.
	$(WITH_TOOLS) $(CARGO) run --release -q -p syncsecret-e2e --bin syncsecret-chaos -- $(CHAOS_ARGS)

image: ## Both controllers as OCI images built here, nothing pulled (podman; localhost/syncsecret/<binary>:dev).
	$(WITH_IMAGE_TOOLS) hack/image.sh $(IMAGE_TAG)

manifests: ## Regenerate config/ from the Rust types.
	$(CARGO) run -q -p syncsecret-runtime --bin syncsecret-manifests

fmt: ## Format the code.
	$(CARGO) fmt --all

lint: ## Formatting, clippy, the declared rust-version and the dependency policy (deny.toml), as CI checks them.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash hack/msrv.sh
	bash hack/cargo-deny.sh check --hide-inclusion-graph bans licenses sources

ci: lint test ## What CI runs.
