"""Logging: one JSON line per request (text on a terminal), user ids hashed, secrets redacted.

`configure(settings)` is called by create_app, so the Procfile (wsgi), the CLI and tests all log the
same way; it installs one handler on the root logger however many apps a process builds.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Flask, g, request

ACCESS = logging.getLogger("wallet_proxy.access")
# Load balancer probes and Prometheus scrapes arrive every few seconds per instance: their successes
# are logged at DEBUG so they do not drown the requests that matter.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would mangle ordinary words and protect nothing anyway
# Record attributes that are logging's own; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def hash_user_id(user_id: str) -> str:
    """A stable, non-reversible tag for a user id (sha256, 16 hex): same id, same tag on every host."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def secret_values(settings) -> list[str]:
    """Every configured secret and the forms it travels in (Basic headers, Redis URL password)."""
    values = [settings.connect_auth, settings.core_api_key, settings.core_api_secret,
              settings.braze_api_key, settings.signing_key]
    values += (settings.signing_key or "").split(",")  # each key of a rotation on its own
    if settings.core_api_key and settings.core_api_secret:
        pair = f"{settings.core_api_key}:{settings.core_api_secret}"
        values.append(base64.b64encode(pair.encode()).decode())
    for client in settings.clients:
        if settings.sandbox and (client.name, client.secret) == ("demo", "demo"):
            continue  # the sandbox's public demo login is printed on purpose
        values.append(client.secret)
        values.append(base64.b64encode(f"{client.name}:{client.secret}".encode()).decode())
    if settings.redis_url:
        try:
            values.append(urlsplit(settings.redis_url).password)
        except ValueError:
            values.append(settings.redis_url)
    found = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    # JSON-escaped forms too, for secrets holding quotes or backslashes; longest first so that a
    # secret containing another is redacted whole.
    found |= {json.dumps(v)[1:-1] for v in found}
    return sorted(found, key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Just in case a message, argument or traceback holds a configured secret: redact it."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = list(secrets)

    @property
    def secrets(self) -> list[str]:
        return self._secrets

    @secrets.setter
    def secrets(self, values) -> None:
        self._secrets = sorted(set(values), key=len, reverse=True)
        # One scan per line whatever the number of secrets (this runs on every request's log line).
        self._pattern = re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None

    def _redact(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern.search(text) else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        redact = self._redact
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
        line = {"ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        line.update(_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: `10:00:00 INFO name: message key=value ...`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        if extra:
            head, sep, tail = text.partition("\n")
            text = f"{head} {extra}{sep}{tail}"
        return text


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it), never a stale stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always wins
        pass


def configure(settings=None, *, level: int = logging.INFO, json_lines: bool | None = None) -> logging.Handler:
    """Install (or update) the one wallet-proxy handler on the root logger; return it."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "wallet_proxy", False)]
    handler = ours[0] if ours else None
    if handler is None:
        # A console handler someone installed before us (logging.basicConfig in the CLI) is replaced,
        # so no line is printed twice.
        for existing in list(root.handlers):
            if type(existing) is logging.StreamHandler and existing.stream in (sys.stderr, sys.stdout):
                root.removeHandler(existing)
        handler = StderrHandler()
        handler.wallet_proxy = True
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    if json_lines is None:
        json_lines = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    if settings is not None:
        redactor = next(f for f in handler.filters if isinstance(f, RedactSecrets))
        # Several apps in one process (tests): redact the secrets of all of them.
        redactor.secrets = set(redactor.secrets) | set(secret_values(settings))
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    logging.getLogger("wallet_proxy").setLevel(level)
    # The development server's request lines hold raw paths (user ids) and query strings (sig): the
    # app's own line per request replaces them.
    logging.getLogger("werkzeug").setLevel(max(level, logging.WARNING))
    return handler


def request_fields(response, seconds: float) -> dict:
    """The fields of a request's log line: never a raw user id, query string, header or body."""
    # Resolve the context-local proxies once: every attribute read through one costs a lookup.
    req = request._get_current_object()
    ctx = vars(g._get_current_object())
    rule = req.url_rule
    user_id = req.view_args.get("user_id") if req.view_args else None
    upstream = ctx.get("upstream_seconds")
    fields = {
        "request_id": ctx.get("request_id"),
        "method": req.method,
        "route": rule.rule if rule is not None else None,
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 1),
        "cache": ctx.get("cache_status"),
        "upstream_ms": round(upstream * 1000, 1) if upstream else None,
        "user": hash_user_id(user_id) if isinstance(user_id, str) else None,
        "client": getattr(ctx.get("client"), "name", None),
        "error": ctx.get("error_code"),
        "detail": ctx.get("error_detail"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def level_for(status: int, route: str | None) -> int:
    """The level of a request's line: errors stand out, probe and scrape successes stay at DEBUG."""
    if status >= 500:
        return logging.ERROR if status == 500 else logging.WARNING
    return logging.DEBUG if status < 400 and route in QUIET_ROUTES else logging.INFO


def log_request(level: int, fields: dict) -> None:
    """Write one request's line (fields as request_fields makes them)."""
    ACCESS.log(level, f"{fields['method']} {fields.get('route') or '-'} {fields['status']}", extra=fields)


def init_app(app: Flask) -> None:
    """Log one line per request of `app`, whichever blueprint added its route."""

    @app.after_request
    def _log(response):
        rule = request.url_rule
        level = level_for(response.status_code, rule.rule if rule is not None else None)
        if not ACCESS.isEnabledFor(level):
            return response
        started = g.get("started")
        log_request(level, request_fields(response, time.monotonic() - started if started else 0.0))
        return response
