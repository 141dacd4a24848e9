"""The production entry (`Procfile`: gunicorn -c gunicorn.conf.py wsgi:app).

Unlike `make run` and `wallet-proxy serve`, it never falls back to the sandbox on its own: with no
upstream settings it refuses to start unless WALLET_PROXY_SANDBOX=1 (gunicorn.conf.py checks the
same in the master first, so the refusal is one clear line rather than a worker's traceback).
"""
from wallet_proxy import create_app
from wallet_proxy.settings import Settings

app = create_app(Settings.from_env(implicit_sandbox=False))
