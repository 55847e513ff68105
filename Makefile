# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8200

.PHONY: run test check fmt lock clean

$(BIN)/coffer: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Initialise ./data on first use (prints the organisation and an admin token once), then serve.
run: $(BIN)/coffer
	@[ -f $(DATA_DIR)/coffer.db ] || $(BIN)/coffer init --data-dir $(DATA_DIR)
	$(BIN)/coffer serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

test: $(BIN)/coffer
	$(BIN)/pytest

check: $(BIN)/coffer
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(BIN)/coffer
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Regenerate the hash-pinned lock file from pyproject.toml (needs `uv`).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) build src/*.egg-info
