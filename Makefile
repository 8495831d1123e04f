# The verbs a person uses. Each installs what it needs first, so a fresh clone needs nothing else.
SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
# The Lambda runtime's Python (3.13): the venv is made with it, and `sam build` needs it on PATH.
# pyenv keeps it beside the machine's default; without it, python3 (3.11 or newer) runs everything
# but `sam build`.
PY313_BIN := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin))
PYTHON ?= $(if $(PY313_BIN),$(PY313_BIN)/python3.13,python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(if $(PY313_BIN),$(PY313_BIN):)$(PATH)

DURATION ?=
SINK ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help deps check-java lock run test test-fast lint bench bench-scale bench-diadoc openapi parameters docs build deploy consumer-build consumer-deploy proto clean

help:
	@echo "make run [DURATION=30] [SINK=sns|eventbridge|sqs|webhook]  the relay on an embedded local stack (no AWS, no Kontur account); its URLs in .local/endpoints.json"
	@echo "make test               every test, the linters and the template checks"
	@echo "make test-fast          the unit tests, in seconds: the inner loop"
	@echo "make lint               ruff and mypy"
	@echo "make bench              the relay against reading alone, a naive poller and the targets [BENCH_ARGS=--help]"
	@echo "make bench-scale [BENCH_ARGS=...]  the Diadoc poller at 10,000 boxes beside the per-box design (~6 min)"
	@echo "make bench-diadoc [BENCH_ARGS=--full]  the Diadoc poller against every habit of Diadoc's feed (--full: 1,000 boxes, 1,000,000 events)"
	@echo "make openapi            regenerate openapi.json, the admin API's description, from its handlers"
	@echo "make parameters         regenerate docs/reference/parameters.md from template.yaml's parameters"
	@echo "make docs               build the documentation site into site/ (open site/index.html)"
	@echo "make build | deploy     sam build | sam deploy (--guided the first time) [CONFIG_ENV=staging]"
	@echo "make consumer-build | consumer-deploy [RELAY_STACK=...]  the example consumer (examples/consumer)"
	@echo "make lock               re-resolve the lock files from requirements*.in (after editing them)"

deps: $(VENV)/.installed node_modules/.installed

# DynamoDB Local (make run, make test) runs on Java 17+: say so before minutes of installing.
check-java:
	@command -v java >/dev/null || { echo "make $(MAKECMDGOALS) needs Java 17 or newer on PATH (DynamoDB Local runs on it), e.g. apt-get install openjdk-17-jre-headless"; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); exit (v[1] + 0 < 17) }' || \
		{ echo "make $(MAKECMDGOALS) needs Java 17 or newer (DynamoDB Local); java -version says:"; java -version; exit 1; }

# Only what the lock files hold, each file checked against its hash: requirements-dev.txt includes
# the layer's lock, so the tests run on exactly what `sam build` puts in the layer.
$(VENV)/.installed: requirements-dev.txt layers/relay/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	touch $@

# One resolution of everything, so that the tools and the layer agree (one botocore); then the
# layer's lock from it, and the tools' lock without the layer's packages (it includes that lock).
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-header
lock: $(VENV)/.installed
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --no-header \
		requirements-dev.in layers/relay/requirements.in -o .venv/all.txt
	$(UV_COMPILE) layers/relay/requirements.in -c .venv/all.txt -o layers/relay/requirements.txt
	$(UV_COMPILE) requirements-dev.in -c .venv/all.txt \
		$$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/--no-emit-package \1/p' layers/relay/requirements.txt) \
		-o requirements-dev.txt
	sed -i '1i # The lock of the tools (make lock writes it from requirements-dev.in); the layer'"'"'s lock beside it.\n-r layers/relay/requirements.txt' requirements-dev.txt

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

run: check-java deps
	$(BIN)/python -m local_stack $(if $(DURATION),--duration $(DURATION)) $(if $(SINK),--sink $(SINK)) $(RUN_ARGS)

test: check-java deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest --durations=15 $(PYTEST_ARGS)

test-fast: deps
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Shorter: BENCH_ARGS="--boxes 2000 --minutes 5"; every flag: python -m tests.bench_scale --help.
bench-scale: deps
	$(BIN)/python -m tests.bench_scale $(BENCH_ARGS)

# Every habit of Diadoc's feed on: 200 boxes and 100,000 events; BENCH_ARGS=--full for the target's size.
bench-diadoc: deps
	$(BIN)/python -m tests.bench_diadoc_habits $(BENCH_ARGS)

openapi: deps
	$(BIN)/python -m local_stack.openapi

parameters: deps
	$(BIN)/python -m tests.template.parameter_reference

# Strict: a broken link or anchor, or a page missing from the navigation, fails the build.
docs: deps
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

proto: deps
	@# mypy-protobuf writes the stub: protoc's own --pyi_out breaks on Diadoc's names (a field named
	@# like its type, an enum value None).
	$(BIN)/python -m grpc_tools.protoc -Ilayers/relay --python_out=layers/relay \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=layers/relay \
		layers/relay/kontur_relay/feeds/diadoc/diadoc_events.proto

build: deps
	$(BIN)/sam build

# --guided asks for the stack's name, Region and parameters and writes them to samconfig.toml; once
# they are there (a region in [$(CONFIG_ENV).deploy.parameters]), a plain deploy reuses them.
# CONFIG_ENV=staging: another stack beside the first, with answers of its own (README, Deploy).
CONFIG_ENV ?= default
deploy: build
	@if awk '/^\[$(CONFIG_ENV)\.deploy\.parameters\]/ { s = 1; next } /^\[/ { s = 0 } s && /^region *=/ { f = 1 } END { exit !f }' samconfig.toml; \
	then $(BIN)/sam deploy --config-env $(CONFIG_ENV); \
	else echo "sam deploy --guided asks for each parameter by name; Enter keeps its default (every default deploys)."; \
		echo "What each one does: docs/reference/parameters.md"; \
		$(BIN)/sam deploy --guided --config-env $(CONFIG_ENV); fi

# The example consumer is a SAM application of its own (examples/consumer/README.md), built and
# deployed from its folder with this SAM CLI and python3.13; RELAY_STACK is the relay it subscribes to.
RELAY_STACK ?= kontur-feed-relay
CONSUMER_BUILD_DIR ?= .aws-sam/build
consumer-build: deps
	cd examples/consumer && $(abspath $(BIN))/sam build --build-dir $(CONSUMER_BUILD_DIR)

consumer-deploy: consumer-build
	cd examples/consumer && $(abspath $(BIN))/sam deploy --template-file $(CONSUMER_BUILD_DIR)/template.yaml \
		--parameter-overrides RelayStackName=$(RELAY_STACK)

clean:
	rm -rf $(VENV) node_modules .aws-sam site examples/consumer/.aws-sam .pytest_cache .mypy_cache .ruff_cache
