# One command to run the service, one to test it. Both create .venv on first use.
# `make run` / `make serve-prod` install only what serving needs; `make test` adds the test tools.
# Every install comes from a lock with hashes (`make lock` regenerates them from setup.cfg):
#   requirements.lock      runtime (the Dockerfile installs the same file)
#   requirements-dev.lock  runtime + the `test` extra (the same versions as requirements.lock)
#   requirements-lint.lock the deployment linters, in their own venv (requirements-lint.in)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINT_VENV ?= .venv-lint
PORT ?= 8000
PIP_INSTALL := $(BIN)/pip install -q
# The package itself on top of its locked dependencies: no resolution, and the lock's setuptools builds it.
INSTALL_SELF := $(PIP_INSTALL) --no-deps --no-build-isolation -e .
PIP_COMPILE := $(LINT_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links

.PHONY: run test serve-prod bench gameday mutate install runtime clean lock lint-deploy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime dependencies only (setup.cfg install_requires, pinned in requirements.lock): what `make run`
# and `make serve-prod` need.
$(VENV)/.runtime: requirements.lock setup.cfg pyproject.toml wallet_proxy/version.py | $(BIN)/python
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements.lock
	$(INSTALL_SELF)
	touch $@

# Runtime + test tools (setup.cfg extras `test`, pinned in requirements-dev.lock): pytest, hypothesis...
$(VENV)/.installed: requirements-dev.lock $(VENV)/.runtime
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements-dev.lock
	$(INSTALL_SELF)
	touch $@

# The deployment linters (checkov, hadolint, yamllint, kubernetes-validate, pip-tools), apart from the
# service's venv: checkov pins dozens of packages of its own.
$(LINT_VENV)/.installed: requirements-lint.lock
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q --require-hashes --no-deps -r requirements-lint.lock
	touch $@

## lock: regenerate the three locks (with hashes) after a change to setup.cfg or requirements-lint.in
lock: $(LINT_VENV)/.installed
	$(PIP_COMPILE) --all-build-deps --output-file requirements.lock setup.cfg
	$(PIP_COMPILE) --all-build-deps --extra test --output-file requirements-dev.lock setup.cfg
	$(PIP_COMPILE) --output-file requirements-lint.lock requirements-lint.in

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

## test: the deployment linters, then the whole suite (needs redis-server, redis-sentinel, chromium,
## node, nginx, promtool, wrk)
test: lint-deploy $(VENV)/.installed tests/js/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint-deploy: every deployment file through its own checker (no Docker daemon, no cluster needed)
lint-deploy: $(LINT_VENV)/.installed $(VENV)/.installed
	$(LINT_VENV)/bin/hadolint Dockerfile
	$(LINT_VENV)/bin/yamllint -s -c .yamllint.yaml compose.yaml deploy .yamllint.yaml .checkov.yaml
	$(LINT_VENV)/bin/kubernetes-validate --quiet --strict -k 1.30.0 deploy/k8s/*.yaml
	$(LINT_VENV)/bin/kubernetes-validate --quiet --strict -k 1.37.0 deploy/k8s/*.yaml
	$(LINT_VENV)/bin/checkov --config-file .checkov.yaml -d deploy/k8s
	$(LINT_VENV)/bin/checkov --config-file .checkov.yaml -f Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_nginx.py -k nginx_accepts_the_configuration
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	promtool check config deploy/prometheus/prometheus.yml

## bench: the load benchmarks; results go to bench/RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

## gameday: a scripted bad afternoon on loopback (nginx, 2 instances, Redis + Sentinels, faults); writes
## bench/gameday.md and exits non-zero when a goal is missed. GAMEDAY_ARGS=--smoke: a ~1-minute version.
## Installs nginx, redis-server and redis-sentinel the way CI does (.ci/run --packages-only).
gameday: $(VENV)/.installed
	bash .ci/run --packages-only
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python bench/gameday.py $(GAMEDAY_ARGS)

## mutate: mutation score of the core modules (minutes per module; not part of make test); writes docs/mutation.md
mutate: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,mutate]'
	$(BIN)/python scripts/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) $(LINT_VENV) tests/js/node_modules .pytest_cache
