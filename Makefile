# The two commands of the README: `make run` and `make test`; `make bench` measures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8200

.PHONY: run test check fmt lock clean bench

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

# Coffer with 1 and 2 workers, the floor server and moto in one run (< 10 minutes; needs wrk);
# prints the table and writes it into docs/benchmarks.md.
bench: $(BIN)/coffer
	@command -v wrk >/dev/null || { echo "make bench needs wrk (apt-get install wrk)" >&2; exit 1; }
	cd bench && ../$(BIN)/python run.py --write-docs

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
