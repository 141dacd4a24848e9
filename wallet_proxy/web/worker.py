"""gunicorn's gevent worker, with the connection limits it lacks (the Procfile's `worker_class`).

gunicorn's gevent worker reads each request head under one timer: `keepalive` seconds (75 here, so
Braze's reused connections survive between renders). A client trickling one header byte every few
seconds, or thousands of idle keep-alive connections, therefore held a greenlet and a slot of
`worker_connections` each, and once the slots were gone new connections (Braze's) waited in the
accept backlog. This worker's own connection loop (gunicorn's AsyncWorker.handle, HTTP/1 part)
changes three things:

- a request head must be complete within HEAD_TIMEOUT (10 s) of the connection's first byte
  (of its arrival, for a new connection); past it the connection is closed;
- between requests a keep-alive connection waits idle, without a timer on the head, for at most
  `keepalive` seconds -- and idle ones give way: when the worker's free slots fall under a reserve,
  the longest idle connections are closed so that a new connection is always taken;
- gunicorn's own error answers (400, 414, 431, 501) are JSON like the app's, and their log lines name
  the error class, never the request line or a header (which hold user ids, `sig`, credentials).

TLS is expected to end at the front (see README "Security"); with gunicorn's own TLS this worker
falls back to gunicorn's loop.
"""
from __future__ import annotations

import errno
import ssl
import traceback
from collections import OrderedDict

import gevent
from gevent.socket import wait_read
from gunicorn import http, util
from gunicorn.http import errors as http_errors
from gunicorn.workers.ggevent import GeventWorker

from ..errors import ApiError

HEAD_TIMEOUT = 10.0  # seconds for a complete request head (SPEC: Pages and operations, Connections)
RESERVE_FRACTION = 0.05  # of worker_connections kept free by closing idle keep-alive connections


class HeadTimeout(Exception):
    """No complete request head within HEAD_TIMEOUT."""


class IdleTimeout(Exception):
    """A keep-alive connection stayed idle past `keepalive`."""


class Evicted(Exception):
    """An idle keep-alive connection was closed to make room for a new one."""


# gunicorn's client errors -> (status, reason, code, message we can show). The message never echoes
# the request: its line and headers hold user ids, query strings and credentials.
_CLIENT_ERRORS = [
    (http_errors.LimitRequestLine, 414, "URI Too Long", "uri_too_long", "request line too long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "headers_too_large",
     "request header fields too large"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented", "not_implemented",
     "unsupported transfer coding"),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "expectation_failed", "expectation failed"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden", "request forbidden"),
]
_BAD_REQUEST = tuple(getattr(http_errors, name) for name in (
    "InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion", "InvalidHeader", "InvalidHeaderName",
    "InvalidProxyLine", "InvalidSchemeHeaders", "ObsoleteFolding", "InvalidChunkSize",
    "ChunkMissingTerminator", "InvalidChunkExtension", "InvalidH2CPreface", "NoMoreData", "ParseException")
    if hasattr(http_errors, name))


def classify(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, code, message) of gunicorn's answer to `exc`; 500 for anything unexpected."""
    for kind, status, reason, code, message in _CLIENT_ERRORS:
        if isinstance(exc, kind):
            return status, reason, code, message
    if isinstance(exc, _BAD_REQUEST) or isinstance(exc, ssl.SSLError):
        return 400, "Bad Request", "invalid_request", "malformed request"
    return 500, "Internal Server Error", "internal", "internal error"


def json_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer carrying the app's JSON error (the one encoding, ApiError.encode);
    the connection closes after it."""
    error = ApiError(message, status=status)
    error.code = code
    body = error.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            "\r\n")
    return head.encode("latin-1") + body


class WalletProxyWorker(GeventWorker):
    """The gevent worker with a request-head timeout, idle connections that give way, JSON errors."""

    head_timeout = HEAD_TIMEOUT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = 0  # connections being served by this worker
        self._idle: OrderedDict = OrderedDict()  # greenlets waiting between requests, oldest first

    # -- connections ------------------------------------------------------------------------------

    def handle(self, listener, client, addr):
        if self.cfg.is_ssl:  # TLS belongs to the front; gunicorn's own loop handles it unchanged
            return super().handle(listener, client, addr)
        client.setblocking(1)
        self.connections += 1
        req = None
        try:
            self._make_room()
            parser = http.get_parser(self.cfg, client, addr)
            listener_name = listener.getsockname()
            proxy_protocol_info = {}
            first = True
            while True:
                if not first and not self._wait_for_next_request(client, parser):
                    break
                first = False
                req = None
                with gevent.Timeout(self.head_timeout, HeadTimeout):
                    req = next(parser)
                if not req:
                    break
                if req.proxy_protocol_info:
                    proxy_protocol_info = req.proxy_protocol_info
                else:
                    req.proxy_protocol_info = proxy_protocol_info
                self.handle_request(listener_name, req, client, addr)
                if not self.cfg.keepalive:
                    break
        except HeadTimeout:
            self.log.debug("closed a connection without a complete request head in %.0f s", self.head_timeout)
        except (IdleTimeout, Evicted):
            pass
        except (http_errors.NoMoreData, StopIteration):
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                self.log.warning("socket error serving a connection: %s", type(exc).__name__)
        except Exception as exc:
            self.handle_error(req, client, addr, exc)
        finally:
            self.connections -= 1
            self._idle.pop(gevent.getcurrent(), None)
            util.close(client)

    def _wait_for_next_request(self, client, parser) -> bool:
        """Wait, idle, for the next request's first byte: False when the connection should close."""
        if not self.alive:
            return False
        buffered = parser.unreader.buf
        if buffered.seek(0, 2):  # a pipelined request is already here
            return True
        me = gevent.getcurrent()
        self._idle[me] = True
        try:
            wait_read(client.fileno(), timeout=self.cfg.keepalive, timeout_exc=IdleTimeout)
        finally:
            self._idle.pop(me, None)
        return True

    def _make_room(self) -> None:
        """Close the longest idle keep-alive connections while free slots are under the reserve."""
        reserve = max(1, int(self.worker_connections * RESERVE_FRACTION))
        excess = self.connections - (self.worker_connections - reserve)
        while excess > 0 and self._idle:
            idle, _ = self._idle.popitem(last=False)
            idle.kill(Evicted, block=False)
            excess -= 1

    def handle_exit(self, sig, frame):
        """SIGTERM: stop as gunicorn does, and close idle keep-alives now (they would hold the drain)."""
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle)

    def _close_idle(self) -> None:
        while self._idle:
            idle, _ = self._idle.popitem(last=False)
            idle.kill(Evicted, block=False)

    # -- gunicorn's own answers ---------------------------------------------------------------------

    def handle_error(self, req, client, addr, exc):
        """Answer a request gunicorn could not hand to the app with the app's JSON error shape.

        gunicorn's own handler answered HTML and logged the request line (raw user ids, `sig`) or
        the exception text (header values); this one logs the error's class only.
        """
        status, reason, code, message = classify(exc)
        peer = addr[0] if addr else "-"
        if status < 500:
            self.log.warning("invalid request from ip=%s: %s (%s)", peer, type(exc).__name__, status)
        else:
            # the traceback's frames without the exception's text, which may quote the request
            frames = "".join(traceback.format_tb(exc.__traceback__))
            self.log.error("error handling a request: %s\n%s", type(exc).__name__, frames)
        try:
            util.write_nonblock(client, json_error(status, reason, code, message))
        except Exception:
            self.log.debug("failed to send an error answer")
