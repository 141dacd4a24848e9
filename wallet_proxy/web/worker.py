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
- a request body must arrive within `WALLET_PROXY_BODY_TIMEOUT` (10 s) of its head, with at most half
  of that between two of its bytes, whoever reads it (the app, a form parser before authentication,
  or gunicorn discarding what the app left): past it the request answers `408` and the connection
  closes. An answer whose client stops reading is dropped once a write has stalled for
  `WALLET_PROXY_WRITE_TIMEOUT` (10 s); a request pipelined behind others is served only once the
  client has read the answers before it (the socket's send queue is empty), within the same timeout,
  and at most PIPELINE_DEPTH in a row, so a client cannot queue work behind answers it never reads;
- connections waiting on their client (idle between requests, a head or body not yet here, an answer
  the client does not read) give way, the longest waiting first, when the worker's free slots fall under
  a reserve, so a new connection (Braze's) is always taken;
- gunicorn's own error answers (400, 414, 431, 501) are JSON like the app's, and their log lines name
  the error class, never the request line or a header (which hold user ids, `sig`, credentials).

TLS is expected to end at the front (see README "Security"); with gunicorn's own TLS this worker
falls back to gunicorn's loop.
"""
from __future__ import annotations

import errno
import heapq
import socket
import ssl
import struct
import time
import traceback

import gevent
from gevent.socket import wait_read
from gunicorn import http, util
from gunicorn.http import errors as http_errors
from gunicorn.http.body import LengthReader
from gunicorn.workers.ggevent import GeventWorker

from ..errors import ApiError, BodyTimeout, ConnectionAbandoned, WriteTimeout
from ..settings import Settings

HEAD_TIMEOUT = 10.0  # seconds for a complete request head (SPEC: Pages and operations, Connections)
RESERVE_FRACTION = 0.05  # of worker_connections kept free by closing connections waiting on their client
PIPELINE_DEPTH = 16  # answers in a row to requests the client sent before reading the previous answers
SENDFILE_CHUNK = 65536
UNREAD_POLL = 0.02  # seconds between looks at a pipelining client's unread answers

try:  # Linux: bytes of a socket's send queue the peer has not acknowledged yet
    from fcntl import ioctl
    from termios import TIOCOUTQ as _OUTQ
except ImportError:  # pragma: no cover - elsewhere the pipeline depth alone bounds it
    _OUTQ = None


def _unsent(client) -> int:
    return struct.unpack("i", ioctl(client.fileno(), _OUTQ, b"\0\0\0\0"))[0]


class HeadTimeout(ConnectionAbandoned):
    """No complete request head within HEAD_TIMEOUT."""


class IdleTimeout(ConnectionAbandoned):
    """A keep-alive connection stayed idle past `keepalive`."""


class Evicted(ConnectionAbandoned):
    """A connection waiting on its client was closed to make room for a new one."""


class ClientSocket:
    """The connection's socket as gunicorn's parser and response see it, every wait on the client bounded.

    gunicorn reads the request (head and body) with `recv` and writes answers with `sendall` /
    `send` / `sendfile`; everything else goes to the gevent socket unchanged. While `body_deadline`
    is set (from a head's end until its body is read), a `recv` waits at most until the deadline
    and at most `body_gap` seconds for the next bytes, else raises BodyTimeout. A write waits at
    most `write_timeout` seconds for the client to take more bytes, else raises WriteTimeout. Both
    waits are entered in the worker's `_waiting` (greenlet -> since when), so that under pressure the
    longest waiting give way.
    """

    def __init__(self, sock, worker: "WalletProxyWorker"):
        self._sock = sock
        self._worker = worker
        self.head_started = time.monotonic()
        self.body_deadline: float | None = None
        self.body_started = 0.0
        self.sent = 0  # bytes of answers written since the current request's head
        # the gevent socket's timeout as last set here: set again only when it changes (two
        # settimeout calls a read and a write were ~3 % of a cache hit's CPU)
        self._timeout: float | None = sock.gettimeout()

    def _bound(self, seconds: float | None) -> None:
        if seconds != self._timeout:
            self._sock.settimeout(seconds)
            self._timeout = seconds

    def gettimeout(self):
        return self._timeout

    def settimeout(self, seconds):  # gunicorn's bounded body drain sets and restores it
        self._bound(seconds)

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recv(self, size: int, *flags) -> bytes:
        deadline = self.body_deadline
        waiting, me = self._worker._waiting, gevent.getcurrent()
        if deadline is None:  # a request head: bounded by the worker's head and idle timers
            self._bound(None)
            waiting[me] = self.head_started
            if self._worker.connections > self._worker.room:
                self._worker._make_room()
            try:
                return self._sock.recv(size, *flags)
            finally:
                waiting.pop(me, None)
        remaining = deadline - time.monotonic()
        # past the deadline only bytes already here are taken
        self._bound(max(0.001, min(self._worker.body_gap, remaining)))
        waiting[me] = self.body_started
        if self._worker.connections > self._worker.room:
            self._worker._make_room()
        try:
            return self._sock.recv(size, *flags)
        except socket.timeout:
            raise BodyTimeout() from None
        finally:
            waiting.pop(me, None)

    def send(self, data, *flags) -> int:
        waiting, me = self._worker._waiting, gevent.getcurrent()
        self._bound(self._worker.write_timeout)
        waiting[me] = time.monotonic()
        if self._worker.connections > self._worker.room:
            self._worker._make_room()
        try:
            sent = self._sock.send(data, *flags)
        except socket.timeout:
            raise WriteTimeout() from None
        finally:
            waiting.pop(me, None)
        self.sent += sent
        return sent

    def sendall(self, data, *flags) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view, *flags):]

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        """gunicorn's `sendfile`, as bounded writes (os.sendfile would wait on the client unbounded)."""
        file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(SENDFILE_CHUNK if count is None else min(SENDFILE_CHUNK, count - total))
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        return total


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
    pipeline_depth = PIPELINE_DEPTH

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = 0  # connections being served by this worker
        self._evicting: set = set()  # of them, told to give way and not yet gone
        # greenlets blocked on their client (idle, body, stalled write) -> since when
        self._waiting: dict = {}
        self._idle: set = set()  # those of them idle between requests (closed at once on SIGTERM)
        # connections above which the longest waiting give way: checked when a connection comes and
        # whenever one starts waiting, so the pool is never full while any connection waits on its client
        self.room = self.worker_connections - max(1, int(self.worker_connections * RESERVE_FRACTION))
        settings = Settings.from_env(implicit_sandbox=True)  # the master refused bad settings already
        self.body_timeout = settings.body_timeout
        self.body_gap = settings.body_timeout / 2
        self.write_timeout = settings.write_timeout
        self.keepalive = self.cfg.keepalive  # read once: gunicorn's Config.__getattr__ is per-call work

    # -- connections ------------------------------------------------------------------------------

    def handle(self, listener, client, addr):
        if self.cfg.is_ssl:  # TLS belongs to the front; gunicorn's own loop handles it unchanged
            return super().handle(listener, client, addr)
        client.setblocking(1)
        self.connections += 1
        req = None
        conn = ClientSocket(client, self)
        try:
            self._make_room()
            parser = http.get_parser(self.cfg, conn, addr)
            listener_name = listener.getsockname()
            proxy_protocol_info = {}
            first = True
            pipelined = 0
            while True:
                if not first:
                    pipelined = pipelined + 1 if parser.unreader.buf.seek(0, 2) else 0
                    if pipelined >= self.pipeline_depth:
                        break  # the client sends requests without reading answers: it retries the rest
                    if pipelined:  # the next request is here already: first the client reads the answers
                        self._wait_until_read(client)
                    if not self._wait_for_next_request(client, parser):
                        break
                first = False
                req = None
                conn.head_started = time.monotonic()
                with gevent.Timeout(self.head_timeout, HeadTimeout):
                    req = next(parser)
                if not req:
                    break
                if req.proxy_protocol_info:
                    proxy_protocol_info = req.proxy_protocol_info
                else:
                    req.proxy_protocol_info = proxy_protocol_info
                conn.sent = 0
                conn.body_started = time.monotonic()
                conn.body_deadline = conn.body_started + self.body_timeout
                self.handle_request(listener_name, req, conn, addr)
                # what the app left of the body, within the same deadline (gunicorn's drain has none);
                # a body read to its end (a GET's is empty) has nothing left to drain
                reader = getattr(getattr(req, "body", None), "reader", None)
                if not (type(reader) is LengthReader and reader.length == 0) and not parser.finish_body(
                        deadline=conn.body_deadline):
                    break
                conn.body_deadline = None
                if not self.keepalive:
                    break
        except BodyTimeout:
            self.log.debug("closed a connection whose request body did not arrive within %.1f s", self.body_timeout)
            if conn.sent == 0:
                self._answer(client, json_error(408, "Request Timeout", "request_timeout",
                                                f"the request body did not arrive within {self.body_timeout:g} s"))
        except WriteTimeout:
            self.log.debug("closed a connection whose client did not read its answer for %.1f s", self.write_timeout)
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
            self._waiting.pop(gevent.getcurrent(), None)
            self._idle.discard(gevent.getcurrent())
            self._evicting.discard(gevent.getcurrent())
            util.close(client)

    def _wait_for_next_request(self, client, parser) -> bool:
        """Wait, idle, for the next request's first byte: False when the connection should close."""
        if not self.alive:
            return False
        buffered = parser.unreader.buf
        if buffered.seek(0, 2):  # a pipelined request is already here
            return True
        me = gevent.getcurrent()  # waiting on the client, idle (closed at once on SIGTERM)
        self._waiting[me] = time.monotonic()
        self._idle.add(me)
        try:
            if self.connections > self.room:
                self._make_room()
            wait_read(client.fileno(), timeout=self.keepalive, timeout_exc=IdleTimeout)
        finally:
            self._waiting.pop(me, None)
            self._idle.discard(me)
        return True

    def _wait_until_read(self, client) -> None:
        """Wait until the client has taken the answers sent so far (the socket's send queue is empty),
        at most the write timeout: a client pipelining requests gets no answer ahead of those it has
        not read, so one that never reads costs one answer, not one per request it sent."""
        if _OUTQ is None:
            return
        me = gevent.getcurrent()
        since = time.monotonic()
        self._waiting[me] = since
        try:
            if self.connections > self.room:
                self._make_room()
            while _unsent(client):
                if time.monotonic() - since >= self.write_timeout:
                    raise WriteTimeout()
                gevent.sleep(UNREAD_POLL)
        finally:
            self._waiting.pop(me, None)

    def _make_room(self) -> None:
        """Close the connections waiting longest on their client while free slots are under the reserve."""
        excess = self.connections - self.room - len(self._evicting)
        if excess <= 0 or not self._waiting:
            return
        me = gevent.getcurrent()
        candidates = ((g, since) for g, since in self._waiting.items() if g is not me)
        for waiter, _ in heapq.nsmallest(excess, candidates, key=lambda item: item[1]):
            self._waiting.pop(waiter, None)
            self._idle.discard(waiter)
            self._evicting.add(waiter)
            waiter.kill(Evicted, block=False)

    def handle_exit(self, sig, frame):
        """SIGTERM: stop as gunicorn does, and close idle keep-alives now (they would hold the drain)."""
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle)

    def _close_idle(self) -> None:
        while self._idle:
            waiter = self._idle.pop()
            self._waiting.pop(waiter, None)
            waiter.kill(Evicted, block=False)

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
        self._answer(client, json_error(status, reason, code, message))

    def _answer(self, client, answer: bytes) -> None:
        """Write a last answer without waiting on the client: what its buffer does not take is lost."""
        try:
            util.write_nonblock(client, answer)
        except Exception:
            self.log.debug("failed to send an error answer")
