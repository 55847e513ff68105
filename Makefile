# The two commands of the README: `make run` and `make test`; `make bench` measures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8200

.PHONY: run test check fmt lock clean bench

PIP := $(BIN)/pip install --quiet --disable-pip-version-check

# What serving needs: the runtime part of the lock, and Coffer itself.
$(BIN)/coffer: pyproject.toml requirements-runtime.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements-runtime.lock
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $@

# What the tests, the checks and the benchmark need besides: the whole lock.
$(VENV)/.dev: $(BIN)/coffer requirements.lock
	$(PIP) --require-hashes -r requirements.lock
	@touch $@

# Initialise ./data on first use (prints the organisation and an admin token once), then serve.
run: $(BIN)/coffer
	@[ -f $(DATA_DIR)/coffer.db ] || $(BIN)/coffer init --data-dir $(DATA_DIR)
	@echo "The coffer command is $(BIN)/coffer; to type just coffer in this shell:"
	@echo "    export PATH=\"$$PWD/$(BIN):\$$PATH\"    (or: source $(BIN)/activate)"
	$(BIN)/coffer serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

test: $(VENV)/.dev
	$(BIN)/pytest

# Coffer with 1 and 2 workers, the floor server and moto in one run (< 10 minutes; needs wrk);
# prints the table and writes it into docs/benchmarks.md.
bench: $(VENV)/.dev
	@command -v wrk >/dev/null || { echo "make bench needs wrk (apt-get install wrk)" >&2; exit 1; }
	cd bench && ../$(BIN)/python run.py --write-docs

check: $(VENV)/.dev
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(VENV)/.dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Regenerate the hash-pinned lock files from pyproject.toml (needs `uv`): the whole one, and the
# runtime part of it (the same versions) that `make run` installs.
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock
	grep -o '^[a-z0-9_.-]*==[^ ]*' requirements.lock > $(VENV)/pins.txt
	uv pip compile pyproject.toml requirements-build.in --generate-hashes --python-version 3.11 \
		-c $(VENV)/pins.txt --no-annotate --custom-compile-command "make lock" \
		-o requirements-runtime.lock

clean:
	rm -rf $(VENV) build src/*.egg-info
