"""gunicorn settings used by the Procfile (`web: gunicorn -c gunicorn.conf.py wsgi:app`).

Serving model: gevent (measured against gthread in bench/RESULTS.md). During a Braze send thousands
of connections wait at once, most of them on a SessionM call or on another request's call (single
flight); a greenlet per connection costs a few KB, a thread per connection a stack and a context
switch. gunicorn's gevent worker monkey-patches the standard library before it imports wsgi.py,
so requests, redis-py, threading.Event/Semaphore and the fetch "threads" of wallets.py all become
cooperative.
"""
import os

# the worker class's own base; gunicorn imports it in the master anyway to load worker_class
from gunicorn.workers.ggevent import GeventWorker


def _drain_window():
    """wallet_proxy.web.drain's window for this environment's settings (the defaults if they are
    invalid: on_starting refuses those with the reason)."""
    from wallet_proxy.settings import ConfigError, Settings
    from wallet_proxy.web.drain import drain_window

    try:
        settings = Settings.from_env(implicit_sandbox=False)
    except ConfigError:
        settings = None
    return drain_window(settings)


bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Without WALLET_PROXY_REDIS_URL the cache, single flight and DELETE live in one process: run one.
# With Redis, WEB_CONCURRENCY processes (and hosts) share the cache.
workers = int(os.environ.get("WEB_CONCURRENCY", "1")) if os.environ.get("WALLET_PROXY_REDIS_URL") else 1
# gunicorn's gevent worker plus what it lacks (wallet_proxy/web/worker.py): a 10 s limit on a request
# head, WALLET_PROXY_BODY_TIMEOUT on a body and WALLET_PROXY_WRITE_TIMEOUT on a stalled write (both read
# by the worker, 10 s), connections waiting on their client that give way to new ones, JSON 4xx.
worker_class = "wallet_proxy.web.worker.WalletProxyWorker"
worker_connections = int(os.environ.get("WALLET_PROXY_WORKER_CONNECTIONS", "4000"))
keepalive = 75  # Braze reuses connections during a send (no Braze page gives its idle time)
timeout = 30
# SIGTERM: stop accepting, let every answer in flight finish, then exit. The window is the longest
# request the service can be in (a triggered send on Braze's retries: 55 s with the defaults), from
# the settings that bound each route: wallet_proxy/web/drain.py holds the formula, and the platform's
# grace (deploy/k8s terminationGracePeriodSeconds, compose stop_grace_period) is checked against it.
graceful_timeout = _drain_window().graceful_timeout
backlog = 4096
accesslog = None  # the app logs one JSON line per request
# gunicorn >= 23 opens a control socket under $HOME by default: two instances on one host would
# fight over it, and a read-only home (containers) breaks start-up. Nothing here uses it.
control_socket_disable = True

# Prometheus with several workers: each writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
# /metrics (whichever worker answers) sums them. Set before the workers import prometheus_client.
# A folder made here is ours: on_exit removes it, so restarts do not pile folders up in the temp dir.
_made_metrics_dir = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    _made_metrics_dir = tempfile.mkdtemp(prefix="wallet-proxy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _made_metrics_dir


def on_starting(server):
    """Refuse to start, in one clear line, when the settings cannot serve customers.

    The production entry never falls back to the sandbox by itself (wsgi.py): a deploy that lost its
    environment must fail, not answer made-up wallets. Checked here, in the master, before any
    worker boots, so the operator reads the reason instead of a worker's traceback.
    """
    import sys

    from wallet_proxy.settings import ConfigError, Settings

    try:
        Settings.from_env(implicit_sandbox=False)
    except ConfigError as exc:
        print(f"wallet-proxy: refusing to start: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def on_exit(server):
    """Remove the metrics folder this configuration made (not one the operator chose)."""
    if _made_metrics_dir:
        import shutil

        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (breaker state, cache degraded) from /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def pre_request(worker, req):
    """Yield to gevent's hub once per request.

    A greenlet serving a keep-alive connection whose next request is already buffered never
    blocks, so under a flood of cheap answers (an open breaker's 503s, cache hits) the hub would
    not run for seconds: the timers behind every deadline and SessionM timeout fire late and the
    requests waiting on them answer past Braze's 2 s. One switch per request keeps them on time.
    """
    if isinstance(worker, GeventWorker):
        import gevent

        gevent.sleep(0)
