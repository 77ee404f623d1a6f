# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# `make run` is for development: DEBUG=1 unless the environment or .env says otherwise.
RUN_DEBUG := $(if $(DEBUG)$(shell grep -s '^DEBUG=' .env),,DEBUG=1)

.PHONY: run test lint bench soak migrate superuser clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

migrate: $(STAMP)
	$(RUN_DEBUG) $(BIN)/python manage.py migrate --noinput

# serving.server is daphne's own command line with a graceful shutdown (1001 on SIGTERM)
# and the close codes daphne's WebSocket library refuses to send (1009, 1013).
# With DEBUG from the environment or .env (it may be off), static files are collected first:
# without DEBUG, pages are served from the collected, hashed files (the image does the same).
run: migrate
	$(if $(RUN_DEBUG),,$(BIN)/python manage.py collectstatic --noinput --verbosity 0)
	$(RUN_DEBUG) $(BIN)/python -m serving.server -b $(HOST) -p $(PORT) chatproject.asgi:application

superuser: $(STAMP)
	$(RUN_DEBUG) $(BIN)/python manage.py createsuperuser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SETTINGS_MODULE=chatproject.settings_test $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=chatproject.settings_test $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

test: lint
	$(BIN)/python -m pytest

# The adversarial suite's long variants (docs/reliability.md): fault cycles for about ten
# minutes, 10,000 connect/disconnect cycles, longer fuzzing. Needs DATABASE_URL (PostgreSQL) and
# REDIS_URL like .ci/run; the figures go to soak-faults.json, soak-leaks.json, soak-api.json.
soak: $(STAMP)
	FAULT_CYCLES=20 FAULT_SECONDS=30 FAULT_CLIENTS=6 FAULT_REPORT=soak-faults.json \
	LEAK_CYCLES=10000 LEAK_REPORT=soak-leaks.json WS_FUZZ_EXAMPLES=2000 \
	SCHEMATHESIS_MAX_SECONDS=300 SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_REPORT=soak-api.json \
	$(BIN)/python -m pytest tests_adversarial -o timeout=3600

# The benchmark (docs/performance.md): starts its own Redis, service instances (uvicorn and
# daphne) and reference servers on free ports, drives them from a separate load generator, and
# stops them. Needs PostgreSQL: DATABASE_URL's server, database <name>_bench (created, emptied).
# Prints a table, writes bench/results/<time>.json; about 7 minutes. BENCH_ARGS: see --help.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
