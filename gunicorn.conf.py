"""gunicorn settings used by the Procfile (`web: gunicorn -c gunicorn.conf.py wsgi:app`)."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Without WALLET_PROXY_REDIS_URL the cache, single flight and DELETE live in one process: run one.
# With Redis, WEB_CONCURRENCY processes (and hosts) share the cache.
workers = int(os.environ.get("WEB_CONCURRENCY", "1")) if os.environ.get("WALLET_PROXY_REDIS_URL") else 1
# gevent: thousands of Braze connections held open while misses wait on SessionM, one greenlet each.
worker_class = "gevent"
worker_connections = int(os.environ.get("WALLET_PROXY_WORKER_CONNECTIONS", "4000"))
keepalive = 75  # Braze reuses connections during a send; outlive its idle timeout
timeout = 30
graceful_timeout = 20  # SIGTERM: stop accepting, finish in-flight answers (all bounded by the deadline)
backlog = 4096
accesslog = None  # the app logs one JSON line per request
