# The README's two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
# The browser tests drive Debian's Chromium (never a downloaded browser build).
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-sqlite lint check-migrations bench clean

$(CHROMIUM):
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

## Start API + web UI + engine on SQLite under ./data; prints the login and an API key.
run: $(STAMP)
	$(BIN)/uploadpools serve

## Install everything the suite needs, then run it on SQLite and (when reachable) PostgreSQL.
test: $(STAMP) $(CHROMIUM)
	@url="$$UPLOADPOOLS_TEST_POSTGRES_URL"; \
	if [ -z "$$url" ]; then \
	  if $(BIN)/python scripts/pg_reachable.py "$(PG_URL)"; then url="$(PG_URL)"; \
	  else echo "PostgreSQL not reachable at $(PG_URL): running on SQLite only"; fi; \
	fi; \
	UPLOADPOOLS_TEST_POSTGRES_URL="$$url" $(BIN)/ruff check src tests bench && \
	UPLOADPOOLS_TEST_POSTGRES_URL="$$url" $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/enqueue.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
