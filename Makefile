# EZThrottle. Needs only Python 3.11+ and make: everything else installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS ?=
PYTEST_ARGS ?=

.PHONY: up-local down-local status logs lint test test-cluster test-fast bench venv clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -e './sdk[test]'
	@touch $(STAMP)

venv: $(STAMP)

## Start three regions, coordinator, delivery and Redis on this machine.
up-local: $(STAMP)
	@$(BIN)/python -m ezthrottle_server.devcluster up

## Stop exactly the processes `make up-local` started.
down-local:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m ezthrottle_server.devcluster down; else echo "nothing to stop"; fi

status: $(STAMP)
	@$(BIN)/python -m ezthrottle_server.devcluster status

logs: $(STAMP)
	@$(BIN)/python -m ezthrottle_server.devcluster logs -n $${N:-60}

## Lint and types: ruff (rules, then formatting) and mypy --strict on services/ and sdk/ (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The whole test suite (real Redis, real processes, loopback only).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The service suites again, every test's Redis a local 3-master Redis Cluster with 4 job partitions.
test-cluster: $(STAMP)
	EZT_TEST_REDIS_CLUSTER=1 EZT_PARTITIONS=4 $(BIN)/python -m pytest $(PYTEST_ARGS) tests/integration/edge tests/integration/delivery \
		tests/integration/workflows tests/integration/coordinator tests/integration/pacing tests/integration/outbound tests/cluster

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $(BENCH_STAMP)

## Every benchmark, one table (bench/README.md). Quick run: make bench BENCH_ARGS=--quick
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: down-local
	rm -rf .local .cache $(VENV)
