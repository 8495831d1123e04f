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
PYTEST_ARGS ?=

.PHONY: help deps run test test-fast lint bench bench-scale openapi build deploy proto clean

help:
	@echo "make run [DURATION=30]  the relay on an embedded local stack (no AWS, no Kontur account)"
	@echo "make test               every test, the linters and the template checks"
	@echo "make test-fast          the unit tests, in seconds: the inner loop"
	@echo "make lint               ruff and mypy"
	@echo "make bench              throughput figures against a baseline measured in the same run"
	@echo "make bench-scale [BENCH_ARGS=...]  the Diadoc poller at 10,000 boxes beside the per-box design (~6 min)"
	@echo "make openapi            regenerate openapi.json, the admin API's description, from its handlers"
	@echo "make build | deploy     sam build | sam deploy --guided"

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements-dev.txt layers/relay/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

run: deps
	$(BIN)/python -m local_stack $(if $(DURATION),--duration $(DURATION)) $(RUN_ARGS)

test: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: deps
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m tests.bench

# Shorter: BENCH_ARGS="--boxes 2000 --minutes 5"; every flag: python -m tests.bench_scale --help.
bench-scale: deps
	$(BIN)/python -m tests.bench_scale $(BENCH_ARGS)

openapi: deps
	$(BIN)/python -m local_stack.openapi

proto: deps
	@# mypy-protobuf writes the stub: protoc's own --pyi_out breaks on Diadoc's names (a field named
	@# like its type, an enum value None).
	$(BIN)/python -m grpc_tools.protoc -Ilayers/relay --python_out=layers/relay \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=layers/relay \
		layers/relay/kontur_relay/feeds/diadoc/diadoc_events.proto

build: deps
	$(BIN)/sam build

deploy: build
	$(BIN)/sam deploy --guided

clean:
	rm -rf $(VENV) node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache
