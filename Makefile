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

run: migrate
	$(RUN_DEBUG) $(BIN)/daphne -b $(HOST) -p $(PORT) chatproject.asgi:application

superuser: $(STAMP)
	$(RUN_DEBUG) $(BIN)/python manage.py createsuperuser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SETTINGS_MODULE=chatproject.settings_test $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=chatproject.settings_test $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
