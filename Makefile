# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The base install: inv on its JSON file, no services.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m compileall -q inventory_cli backends
	touch $@

# Everything: every backend's client, and the test and lint tools.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q inventory_cli backends
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p demo
	cd demo && ../$(BIN)/inv init && \
	  ../$(BIN)/inv add "Blue mug" --price 4.50 --qty 12 --category kitchen --reorder-level 5 && \
	  ../$(BIN)/inv add "Tea towel" --price 3.20 --qty 4 --category kitchen --reorder-level 5 && \
	  ../$(BIN)/inv update P000001 --change -3 --reason sale && \
	  ../$(BIN)/inv list && ../$(BIN)/inv report low-stock
	@echo "The inventory is demo/inventory.json; run more with: $(BIN)/inv --file demo/inventory.json --help"

services:
	./scripts/services.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Three test processes (pytest-xdist): on two cores many tests wait on PostgreSQL, Kafka
# or a child process.  PYTEST_ARGS="-n 0 -k name" runs a few tests in this process.
PYTEST_ARGS ?= -n 3 --maxschedchunk 1
test: $(VENV)/.installed-dev services lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q inventory_cli backends
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/json_import.py
	$(BIN)/python bench/postgres.py
	$(BIN)/python bench/kafka.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
