# wallet-proxy: the Procfile's web line (gunicorn + gevent) in a slim image, as a non-root user.
#
#   docker build -t wallet-proxy .
#   docker run --rm -p 8000:8000 --env-file .env wallet-proxy      # settings: see .env.example
#
# tests/test_docker.py does what this file does without Docker: its RUN lines as a script in a fresh
# venv (the user-creation line excepted), then its CMD as that user and its HEALTHCHECK.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/wallet-proxy \
    PATH=/opt/wallet-proxy/bin:$PATH \
    PORT=8000

# The package with its runtime dependencies only (setup.cfg install_requires: no test tools), in a
# venv; the sources are not kept in the image.
COPY pyproject.toml setup.cfg README.md LICENSE /tmp/src/
COPY wallet_proxy /tmp/src/wallet_proxy
RUN python -m venv /opt/wallet-proxy \
 && pip install --upgrade pip \
 && pip install --no-compile /tmp/src \
 && rm -rf /tmp/src

WORKDIR /app
COPY Procfile gunicorn.conf.py wsgi.py ./

# No shell, no home: gunicorn.conf.py disables the control socket gunicorn would put under $HOME.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wallet-proxy
USER 10001:10001

EXPOSE 8000
# /healthz: the process answers. (Readiness, /readyz, is for load balancers; see deploy/k8s.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; \
urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# The Procfile's web line. SIGTERM (docker stop) drains in-flight answers within graceful_timeout 10 s.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
