# wallet-proxy: the Procfile's web line (gunicorn + gevent) in a slim image, as a non-root user.
#
#   docker build -t wallet-proxy .
#   docker run --rm -p 8000:8000 --env-file .env wallet-proxy      # settings: see .env.example
#
# Two stages: `build` installs the locked dependencies (requirements.lock, hashes checked) and the
# package into a venv and compiles its bytecode; the runtime stage copies only that venv, with no pip,
# setuptools or compiler. tests/test_docker.py replays this file without Docker (its RUN lines as
# scripts in a fresh folder standing for /), and `make lint-deploy` runs hadolint and checkov on it.
#
# The base image is pinned by digest so two builds of one commit start from the same bytes. To move
# to a newer patch release: `docker buildx imagetools inspect python:3.11-slim-bookworm` prints the
# digest of the tag's manifest list; replace the tag and the digest in both FROM lines (the same
# image for both stages: the venv's interpreter is the base image's). tests/test_docker.py checks both.
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/wallet-proxy \
    PATH=/opt/wallet-proxy/bin:$PATH

# Dependencies first, from the lock alone: a change to the sources does not reinstall them.
COPY requirements.lock /tmp/src/
RUN python -m venv /opt/wallet-proxy \
 && /opt/wallet-proxy/bin/python -m pip install --require-hashes --no-deps -r /tmp/src/requirements.lock

# Then the package itself (its dependencies are already there; the lock's setuptools builds it).
COPY pyproject.toml setup.cfg README.md LICENSE /tmp/src/
COPY wallet_proxy /tmp/src/wallet_proxy
RUN /opt/wallet-proxy/bin/python -m pip install --no-deps --no-build-isolation --no-compile /tmp/src \
 && /opt/wallet-proxy/bin/python -m pip uninstall -y -q setuptools wheel pip \
 && rm -rf /tmp/src

WORKDIR /app
COPY Procfile gunicorn.conf.py wsgi.py ./
# Bytecode now: the runtime root is read-only (deploy/k8s), and every worker would compile at start.
# Hash-checked .pyc files stay valid whatever timestamps the copy to the next stage gives the sources.
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/wallet-proxy /app

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wallet-proxy" \
      org.opencontainers.image.description="Live SessionM loyalty data for Braze messages" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.10-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/wallet-proxy \
    PATH=/opt/wallet-proxy/bin:$PATH \
    PORT=8000

# No pip at run time: the base image's own is removed too (the venv's went in the build stage).
RUN rm -rf /usr/local/lib/python3.11/site-packages/pip /usr/local/lib/python3.11/site-packages/pip-* \
      /usr/local/bin/pip /usr/local/bin/pip3 /usr/local/bin/pip3.11

COPY --from=build /opt/wallet-proxy /opt/wallet-proxy
COPY --from=build /app /app
WORKDIR /app

# No shell, no home: gunicorn.conf.py disables the control socket gunicorn would put under $HOME.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wallet-proxy
USER 10001:10001

EXPOSE 8000
# /healthz: the process answers. (Readiness, /readyz, is for load balancers; see deploy/k8s.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; \
urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# The Procfile's web line. SIGTERM (docker stop) drains every answer in flight within graceful_timeout
# (the longest request: 55 s with the defaults, wallet_proxy/web/drain.py); compose waits 60 s.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
