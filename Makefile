# One command to run the service, one to test it. Both create .venv on first use.
# `make run` / `make serve-prod` install only what serving needs; `make test` adds the test tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
PIP_INSTALL := $(BIN)/pip install -q

.PHONY: run test serve-prod bench mutate install runtime clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime dependencies only (setup.cfg install_requires): what `make run` and `make serve-prod` need.
$(VENV)/.runtime: setup.cfg pyproject.toml wallet_proxy/version.py | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

# Runtime + test tools (setup.cfg extras `test`): pytest, hypothesis, schemathesis, validators...
$(VENV)/.installed: $(VENV)/.runtime
	$(PIP_INSTALL) -e '.[test]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

runtime: $(VENV)/.runtime
install: $(VENV)/.installed

## run: the service on http://127.0.0.1:$(PORT) (sandbox SessionM/Braze when nothing is configured)
run: $(VENV)/.runtime
	$(BIN)/wallet-proxy serve --port $(PORT)

## serve-prod: the Procfile's web line (gunicorn), reading settings from the environment and .env
serve-prod: $(VENV)/.runtime
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## test: the whole suite (needs redis-server, redis-sentinel, chromium, node, nginx, promtool, wrk)
test: $(VENV)/.installed tests/js/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the load benchmarks; results go to bench/RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

## mutate: mutation score of the core modules (minutes per module; not part of make test); writes docs/mutation.md
mutate: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,mutate]'
	$(BIN)/python scripts/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache
