# One command to run the service, one to test it. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test serve-prod bench mutate install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

## run: the service on http://127.0.0.1:$(PORT) (sandbox SessionM/Braze when nothing is configured)
run: $(VENV)/.installed
	$(BIN)/wallet-proxy serve --port $(PORT)

## serve-prod: the Procfile's web line (gunicorn)
serve-prod: $(VENV)/.installed
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## test: the whole suite (needs redis-server, chromium and node for the real-service tests)
test: $(VENV)/.installed tests/js/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the load benchmarks; results go to bench/RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

## mutate: mutation score of the core modules (minutes per module; not part of make test); writes docs/mutation.md
mutate: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,mutate]'
	$(BIN)/python scripts/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache
