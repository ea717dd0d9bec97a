# Baton: `make run` starts the whole platform on this machine; `make test` runs the test suite.
# Nothing is assumed but Python 3.11+ and make: uv is installed into .tools/ when it is not on PATH.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --all-packages --frozen
PYTEST_ARGS ?=
PACKAGES = shared baton_tools $(notdir $(wildcard services/*))

.PHONY: help setup run test test-system lint fmt migrate docs bench soak clean

help:
	@echo "make run      start Postgres, NATS and every service (Ctrl-C stops; data kept in .baton/)"
	@echo "make test     run the test suite (starts its own Postgres and NATS)"
	@echo "make lint     ruff, ruff format --check, mypy --strict"
	@echo "make fmt      format and auto-fix"
	@echo "make migrate  create schemas/roles and apply every service's migrations"
	@echo "make docs     generate the event catalog (docs/events/) and the configuration reference"
	@echo "make bench    run the benchmarks under bench/"
	@echo "make soak     the journey at a fixed rate for 30 min, memory watched (BATON_SOAK_SECONDS, BATON_SOAK_RATE)"
	@echo "make clean    remove .baton/ (local data), caches and the virtualenv"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

.venv/.synced: $(if $(findstring .tools,$(UV)),.tools/bin/uv) pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/pyproject.toml)
	$(UV) sync --all-packages --locked
	@touch $@

setup: .venv/.synced

run: setup
	$(RUN) baton run

migrate: setup
	$(RUN) baton migrate

test: setup
	$(RUN) pytest -m "not slow and not soak" $(PYTEST_ARGS)

test-system: setup
	$(RUN) pytest -m "slow and not soak" $(PYTEST_ARGS)

# The journey at BATON_SOAK_RATE actions/s for BATON_SOAK_SECONDS (default 1800), memory watched; not in CI.
soak: setup
	$(RUN) pytest -m soak tests/system/test_soak.py $(PYTEST_ARGS)

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy $(addprefix -p ,$(PACKAGES))

fmt: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

docs: setup
	$(RUN) python tools/gen_event_docs.py
	$(RUN) python tools/gen_config_docs.py

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

clean:
	rm -rf .baton .venv .tools .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
