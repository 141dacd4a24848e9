"""Logging: one JSON line per request (text on a terminal), user ids hashed, secrets redacted.

`configure(settings)` is called by create_app, so the Procfile (wsgi), the CLI and tests all log the
same way; it installs one handler on the root logger however many apps a process builds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from urllib.parse import urlsplit

from flask import Flask, g, request

from ..jsoncodec import log_line
from ..upstream.transport import basic_token

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
        values.append(basic_token(settings.core_api_key, settings.core_api_secret))
    for client in settings.clients:
        if settings.sandbox and (client.name, client.secret) == ("demo", "demo"):
            continue  # the sandbox's public demo login is printed on purpose
        values.append(client.secret)
        values.append(basic_token(client.name, client.secret))
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
        line = {"ts": _timestamp(record.created),
                "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        line.update(_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return log_line(line)


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
    return access_fields(ctx.get("request_id"), req.method, rule.rule if rule is not None else None,
                         response.status_code, seconds, ctx.get("cache_status"),
                         user_id if isinstance(user_id, str) else None,
                         getattr(ctx.get("client"), "name", None), ctx.get("error_code"),
                         ctx.get("error_detail"), upstream)


def access_fields(request_id, method: str, route: str | None, status: int, seconds: float,
                  cache: str | None, user_id: str | None, client: str | None, error: str | None = None,
                  detail: str | None = None, upstream: float | None = None) -> dict:
    """The fields of a request's log line, whichever path answered (the route or the fast path)."""
    fields = {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "cache": cache,
        "upstream_ms": round(upstream * 1000, 1) if upstream else None,
        "user": hash_user_id(user_id) if user_id is not None else None,
        "client": client,
        "error": error,
        "detail": detail,
    }
    return {k: v for k, v in fields.items() if v is not None}


def level_for(status: int, route: str | None) -> int:
    """The level of a request's line: errors stand out, probe and scrape successes stay at DEBUG."""
    if status >= 500:
        return logging.ERROR if status == 500 else logging.WARNING
    return logging.DEBUG if status < 400 and route in QUIET_ROUTES else logging.INFO


def log_request(level: int, fields: dict) -> None:
    """Write one request's line (fields as access_fields makes them)."""
    message = f"{fields['method']} {fields.get('route') or '-'} {fields['status']}"
    handler = _sole_json_handler(level)
    if handler is None:
        ACCESS.log(level, message, extra=fields)
        return
    # The same line the record would make through RedactSecrets and JsonFormatter, without the
    # record: LogRecord, findCaller, the filter's pass over every attribute and the formatter's
    # were half of a cache hit's own cost (bench/profile-hits.txt).
    line = {"ts": _timestamp(time.time()), "level": _LEVEL_NAMES[level], "logger": ACCESS.name,
            "msg": message}
    line.update(fields)
    text = log_line(line)
    redactor = handler.filters[0]
    if redactor._pattern is not None:  # secrets in their JSON-escaped forms too (secret_values)
        text = redactor._redact(text)
    handler.acquire()
    try:
        stream = handler.stream
        stream.write(text + handler.terminator)
        stream.flush()
    except Exception:
        ACCESS.log(level, message, extra=fields)  # the usual way, and its usual error handling
    finally:
        handler.release()


_ROOT = logging.getLogger()
_PACKAGE = logging.getLogger("wallet_proxy")
_LEVEL_NAMES = {level: logging.getLevelName(level).lower()
                for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}


def _sole_json_handler(level: int):
    """Our handler, when a record of ACCESS would reach it alone, through its redactor, as JSON.

    Anything else -- another handler or filter anywhere on the way (pytest's log capture, a
    developer's), text lines on a terminal -- and the line goes through logging as usual.
    """
    handlers = _ROOT.handlers
    if (len(handlers) != 1 or ACCESS.handlers or ACCESS.filters or _PACKAGE.handlers or _PACKAGE.filters
            or _ROOT.filters or not ACCESS.propagate or not _PACKAGE.propagate or level not in _LEVEL_NAMES):
        return None
    handler = handlers[0]
    if (not getattr(handler, "wallet_proxy", False) or type(handler.formatter) is not JsonFormatter
            or level < handler.level or len(handler.filters) != 1
            or not isinstance(handler.filters[0], RedactSecrets)):
        return None
    return handler


_second = (0, "")  # (epoch second, its ISO 8601 text): one strftime a second, not one a line


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds, as `2026-11-28T10:00:00.123Z`."""
    global _second
    whole = int(created)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((created - whole) * 1000):03d}Z"


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
