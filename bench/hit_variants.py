"""The service's app built with less and less of a cache hit's work, for bench/hit_budget.py.

Each is constructed from the product's own parts (create_app, WalletGet, Services), never by flipping
a switch inside a product module:

- `full`: what wsgi.py serves;
- `no_access_line`: the same app with the access logger's level above INFO (logging's own setting):
  no access line is built or written;
- `bare`: no access line, and the wallet handler constructed over the same services without metrics;
- `constant`: the full app answers the first wallet read; every later one gets that answer's status,
  headers and body back without our code running (what the service process costs by itself).
"""
from __future__ import annotations

import dataclasses
import logging

from wallet_proxy import create_app
from wallet_proxy.services import cache_budgets
from wallet_proxy.settings import Settings
from wallet_proxy.wallet.handler import WalletGet


def _app():
    return create_app(Settings.from_env(implicit_sandbox=False))


def _quiet():
    logging.getLogger("wallet_proxy.access").setLevel(logging.WARNING)


class _Lazy:
    """Built on the first request, inside the worker (after gevent's monkey-patching)."""

    def __init__(self, factory):
        self.factory, self.app = factory, None

    def __call__(self, environ, start_response):
        if self.app is None:
            self.app = self.factory()
        return self.app(environ, start_response)


def _full():
    return _app()


def _no_access_line():
    app = _app()
    _quiet()
    return app


def _bare():
    app = _app()
    _quiet()
    handler = app.wsgi_app
    services = dataclasses.replace(handler.services, metrics=None)
    app.wsgi_app = WalletGet(handler.wsgi_app, services, render_bytes=cache_budgets(services.settings)["rendered"])
    return app


def _constant():
    app = _app()
    answer = {}

    def constant(environ, start_response):
        if not environ.get("PATH_INFO", "").startswith("/v1/wallets/"):  # the start-up probe
            return app(environ, start_response)
        if not answer:
            def keep(status, headers, exc_info=None):
                answer.update(status=status, headers=list(headers))
            answer["body"] = b"".join(app(environ, keep))
        start_response(answer["status"], list(answer["headers"]))
        return [answer["body"]]

    return constant


full = _Lazy(_full)
no_access_line = _Lazy(_no_access_line)
bare = _Lazy(_bare)
constant = _Lazy(_constant)
