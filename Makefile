# tablesync — the two set-up commands are `make demo` and `make test`;
# both install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install infra-up infra-down infra-status migrate lint format test test-unit \
        test-integration test-faults simulate demo bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

infra-up: $(STAMP)
	$(PY) -m tablesync.localinfra up

infra-down: $(STAMP)
	$(PY) -m tablesync.localinfra down

infra-status: $(STAMP)
	$(PY) -m tablesync.localinfra status

migrate: infra-up
	$(VENV)/bin/tablesync db migrate

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format services tests bench
	$(VENV)/bin/ruff check --fix services tests bench

test: infra-up
	$(VENV)/bin/pytest

test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

test-integration: infra-up
	$(VENV)/bin/pytest tests/integration tests/emulators tests/connectors tests/admin

# The long fault run (5,000+ changes, 20+ faults of each kind); `make test`
# runs its short variant. One process (-n 0), so -s shows its progress as it runs.
test-faults: infra-up
	TABLESYNC_FAULTS=full $(VENV)/bin/pytest -n 0 -s tests/faults

# Seeded schedules of the engine on in-memory ports under crashes, failures
# and several apply instances; `make test` runs the calm profile.
simulate: $(STAMP)
	$(PY) -m tests.simulation --profile all --schedules $${SCHEDULES:-3000} --seed $${SEED:-1} --trace 40

bench: infra-up
	$(PY) -m bench

bench-smoke: infra-up
	$(PY) -m bench --smoke

demo: infra-up
	$(VENV)/bin/tablesync demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
