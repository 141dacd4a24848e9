"""The hot SessionM call under gevent: one host, kept-alive sockets, geventhttpclient's C parser.

A send is mostly misses, and every miss is one `get_user_offers` POST. Through requests + urllib3
that POST cost about a third of a miss's CPU (bench/RESULTS.md, "CPU per miss"): session merging,
adapters, urllib3's pool and http.client's pure-Python header parsing. This transport keeps the
same contract as `transport.Transport` (`send(request) -> Reply`, the same ApiErrors with
`reached`, one more send of an idempotent request whose kept-alive connection was closed
unanswered), for one upstream host, and does only what that call needs: it writes a request made
from a pre-built head, reads the answer with geventhttpclient's HTTP parser (the one Locust's
FastHttpUser uses) and keeps the socket for the next call.

It needs gevent's cooperative sockets and timeouts: `services.build` uses it for SessionM Connect
only under gunicorn's gevent worker; everywhere else (tests in threads, the CLI, the sandbox, a
configured proxy) Connect keeps the requests-based transport. The choice, measured:
bench/cpu_per_miss.py.
"""
from __future__ import annotations

import collections
import errno
import logging
import socket
import ssl
import time
from urllib.parse import urlsplit

from .. import jsoncodec
from ..errors import ApiError, ClosedUnanswered, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from . import transport

log = logging.getLogger(__name__)

from .transport import _NO_BODY, Request  # noqa: E402 - the one request type of the transport interface

USER_AGENT = "wallet-proxy/0.1"


gevent = HTTPConnectionClosed = HTTPParseError = HTTPSocketResponse = None  # imported by _load()


def _load() -> None:
    """Import gevent and geventhttpclient when a GeventTransport is made, not with this module: the
    CLI and the tests import the Connect client without ever running under gevent."""
    global gevent, HTTPConnectionClosed, HTTPParseError, HTTPSocketResponse
    import gevent as _gevent
    from geventhttpclient.response import HTTPConnectionClosed as _closed, HTTPParseError as _parse, \
        HTTPSocketResponse as _response

    gevent, HTTPConnectionClosed, HTTPParseError, HTTPSocketResponse = _gevent, _closed, _parse, _response


class GeventTransport:
    """`send(Request) -> Reply` to one base URL's host, over at most `pool_size` kept-alive sockets."""

    bounds_total_time = True  # a call never outlives its timeout, however the server trickles

    def __init__(self, base_url: str, pool_size: int, *, verify: bool | str = True):
        _load()
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        self._host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.pool_size = pool_size
        self._idle: collections.deque = collections.deque()
        self._context = None
        if self.tls:
            self._context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    def send(self, request) -> transport.Reply:
        """Make one HTTP call to this transport's host (the path and query of `request.url`)."""
        timeout = request.timeout
        started = time.monotonic()
        wire = self._wire(request)
        try:
            try:
                status, headers, content = self._exchange(wire, request, timeout)
            except ClosedUnanswered:
                left = timeout - (time.monotonic() - started)
                if not (request.idempotent and left > 0.05):
                    raise _error(UpstreamUnavailable(f"{request.name} refused or dropped the connection",
                                                     retry_after=1), True) from None
                log.info("%s closed a kept-alive connection without answering; sent again", request.name)
                status, headers, content = self._exchange(wire, request, left, fresh=True)
        except ClosedUnanswered:
            raise _error(UpstreamUnavailable(f"{request.name} refused or dropped the connection",
                                             retry_after=1), True) from None
        elapsed = time.monotonic() - started
        try:
            data = jsoncodec.loads(content) if content else None
        except ValueError:
            data = None
        return transport.Reply(status, headers, data, elapsed, content[:800].decode("utf-8", "replace")[:200])

    def close(self) -> None:
        while self._idle:
            _close(self._idle.pop())

    # -- one exchange ---------------------------------------------------------------------------

    def _wire(self, request) -> bytes:
        parts = urlsplit(request.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = request.content
        headers = dict(request.headers or {})
        if body is None and request.json is not _NO_BODY:
            body = jsoncodec.dumps(request.json)
            headers.setdefault("Content-Type", "application/json")
        body = body or b""
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 f"User-Agent: {USER_AGENT}", "Accept-Encoding: identity", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()
                  if name.lower() not in ("host", "content-length", "user-agent", "accept-encoding")]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _exchange(self, wire: bytes, request, timeout: float, fresh: bool = False):
        """Send `wire` and read the answer within `timeout`; (status, headers, body).

        Raises ClosedUnanswered when a reused connection was closed before any answer, else ApiErrors."""
        timer = gevent.Timeout.start_new(timeout)
        sock = None
        reused = False
        try:
            sock = None if fresh else self._take()
            reused = sock is not None
            if sock is None:
                sock = self._connect(min(request.connect_timeout, timeout), request.name)
            try:
                sock.sendall(wire)
                response = HTTPSocketResponse(sock, method=request.method)
            except HTTPConnectionClosed:
                if reused:
                    raise ClosedUnanswered() from None
                raise _error(UpstreamUnavailable(f"{request.name} refused or dropped the connection",
                                                 retry_after=1), True) from None
            except OSError as exc:
                if reused and exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    raise ClosedUnanswered() from None
                raise
            content = response.read()
            status, headers = response.status_code, response.info()
            keep = not response.should_close() and response.message_complete
            if keep and len(self._idle) < self.pool_size:
                self._idle.append(sock)
            else:
                _close(sock)
            sock = None
            return status, headers, content
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise _error(UpstreamTimeout(f"{request.name} did not answer within {timeout:.2f}s"), True) from None
        except (ClosedUnanswered, ApiError):
            raise
        except HTTPParseError as exc:
            raise _error(UpstreamError(f"{request.name} call failed: {type(exc).__name__}"), True) from exc
        except OSError as exc:
            raise _error(UpstreamUnavailable(f"{request.name} refused or dropped the connection",
                                             retry_after=1), True) from exc
        finally:
            timer.close()
            if sock is not None:
                _close(sock)

    def _take(self):
        return self._idle.pop() if self._idle else None

    def _connect(self, timeout: float, name: str):
        """A new connection (TLS when the URL says https) within `timeout`, or an ApiError (never sent)."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(None)  # the call's own timer bounds every read and write from here
            return sock
        except socket.timeout as exc:
            raise _error(UpstreamUnavailable(f"{name} did not accept a connection in time", retry_after=1),
                         False) from exc
        except ssl.SSLError as exc:
            raise _error(UpstreamError(f"{name} call failed: {type(exc).__name__}"), False) from exc
        except OSError as exc:
            raise _error(UpstreamUnavailable(f"{name} refused or dropped the connection", retry_after=1),
                         False) from exc


def _error(error: ApiError, reached: bool) -> ApiError:
    error.reached = reached  # may the request have reached the server (transport.may_have_reached)
    return error


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass
