"""wallet-proxy: Braze Connected Content facade over SessionM's offer wallet, tags and triggered sends."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Flask is imported when an app is built, not by every module of the package
    from flask import Flask  # (the playground's render processes start without it)

from .version import __version__

__all__ = ["__version__", "create_app"]


MIN_CLIENT_SECRET = 16  # characters; shorter secrets are warned about at start (SPEC: Configuration)


def create_app(settings=None, **services_kwargs) -> Flask:
    """Build the WSGI app for `settings` (default: read from the environment)."""
    from flask import Flask

    from . import services
    from .preview import routes as preview
    from .sends import routes as trigger
    from .settings import Settings
    from .sync import routes as sync
    from .tags import routes as tags
    from .wallet.handler import WalletGet
    from .wallet import routes as wallets
    from .web import http, ops

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder="preview/static", template_folder="preview/templates")
    app.json.sort_keys = False
    app.json.compact = True
    app.url_map.strict_slashes = False  # Braze must never get a redirect
    app.url_map.converters["anypath"] = http.AnyPathConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["wallet_proxy"] = services.build(settings, **services_kwargs)
    http.init_app(app)
    for blueprint in (ops.bp, wallets.bp, tags.bp, sync.bp, trigger.bp, preview.bp):
        app.register_blueprint(blueprint)
    # The wallet read (most of a send, hits and misses) is answered in front of Flask, by one handler.
    app.wsgi_app = WalletGet(app.wsgi_app, app.extensions["wallet_proxy"],
                             render_bytes=services.cache_budgets(settings)["rendered"])
    _report_start(settings)
    return app


def _report_start(settings) -> None:
    """Say at start what this deployment will do: mode, configured upstreams, who may call."""
    import logging

    log = logging.getLogger("wallet_proxy")
    if settings.sandbox:
        names = ", ".join(f"{c.name}:{c.secret}" if (c.name, c.secret) == ("demo", "demo") else c.name
                          for c in settings.clients)
        log.warning("SANDBOX MODE: no SessionM or Braze settings, answering from built-in simulators; "
                    "clients: %s", names)
    else:
        groups = {"connect (wallet)": settings.connect_configured, "core (tags)": settings.core_configured,
                  "braze (trigger)": settings.braze_configured}
        log.info("upstreams: %s", ", ".join(f"{name} {'on' if on else 'off: 503 not_configured'}"
                                            for name, on in groups.items()))
    if not settings.clients:
        log.warning("WALLET_PROXY_CLIENTS is empty: every API route answers 401 until a client is set")
    short = [c.name for c in settings.clients if len(c.secret) < MIN_CLIENT_SECRET
             and not (settings.sandbox and (c.name, c.secret) == ("demo", "demo"))]
    if short:  # names only: a secret is never logged
        log.warning("client secret shorter than %d characters (easy to guess): %s; use e.g. "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`",
                    MIN_CLIENT_SECRET, ", ".join(short))
