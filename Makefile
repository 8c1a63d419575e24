# `make run` runs the default sweep, races its finalists and prints the answer; `make test` runs the whole test suite.
# Both create .venv in the repository root on first use (only python3 is needed on the machine).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV := uv==0.13.8

.PHONY: setup lock run test lint bench clean

setup: $(STAMP)

# requirements.lock pins every package (with hashes) for every platform; `uv pip sync` installs exactly that set.
# Refresh it after changing pyproject.toml's dependencies with `make lock`.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check $(UV)
	$(BIN)/uv pip sync --quiet --compile-bytecode --require-hashes --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --no-deps --no-build-isolation --python $(BIN)/python -e .
	$(BIN)/python -m sweep.install_check
	touch $(STAMP)

lock:
	test -x $(BIN)/uv || $(MAKE) setup
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 --generate-hashes \
		--quiet -o requirements.lock

run: setup
	$(BIN)/sweep run --space mnist1d --confirm

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/loss_overhead.py

clean:
	rm -rf $(VENV) sweeps runs .pytest_cache
