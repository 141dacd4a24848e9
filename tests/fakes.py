"""Small real HTTP servers on loopback for tests: scriptable upstreams and the service itself."""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict
    body: bytes
    query: dict = field(default_factory=dict)

    @property
    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """What a fake route answers: JSON (dict/list) or raw bytes, after an optional delay."""

    status: int = 200
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class FakeUpstream:
    """A threaded WSGI server on 127.0.0.1 with routes scripted per test.

    `on(method, pattern, answer)`: answer is a Reply, a list of Replies (played in order, the last
    one repeating), or a callable(Recorded) -> Reply.
    """

    UNSCRIPTED = Reply(404, {"error": "no route scripted"})

    def __init__(self):
        self.requests: list[Recorded] = []
        self._routes: list = []
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def on(self, method: str, pattern: str, answer) -> "FakeUpstream":
        """Script the answer to requests whose path matches the regex `pattern` (newest rule wins)."""
        if isinstance(answer, list):
            answer = list(answer)
        with self._lock:
            self._routes.insert(0, (method.upper(), re.compile(pattern), answer))
        return self

    def calls(self, pattern: str = "") -> list[Recorded]:
        """Requests received whose path matches `pattern`."""
        with self._lock:
            return [r for r in self.requests if re.search(pattern, r.path)]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._routes.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        recorded = Recorded(request.method, request.path, dict(request.headers), request.get_data(),
                            request.args.to_dict())
        with self._lock:
            self.requests.append(recorded)
            answer = None
            for method, pattern, candidate in self._routes:
                if method == request.method and pattern.search(request.path):
                    answer = candidate
                    break
        if answer is None:
            reply = self.UNSCRIPTED
        elif callable(answer):
            reply = answer(recorded)
        elif isinstance(answer, list):
            with self._lock:
                reply = answer.pop(0) if len(answer) > 1 else answer[0]
        else:
            reply = answer
        if reply.delay:
            time.sleep(reply.delay)
        if isinstance(reply.body, (bytes, str)):
            data = reply.body.encode() if isinstance(reply.body, str) else reply.body
            mimetype = "text/plain"
        else:
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            mimetype = "application/json"
        response = Response(data, status=reply.status, headers=self.headers_for(reply), mimetype=mimetype)
        return response(environ, start_response)

    def headers_for(self, reply: Reply) -> dict:
        """The headers of an answer: the scripted ones (FakeBraze adds Braze's own)."""
        return reply.headers


class FakeBraze(FakeUpstream):
    """A fake Braze REST API: like FakeUpstream, plus what Braze sends on EVERY answer.

    Braze's answers carry `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch seconds of the end of
    the hourly window) whatever the status (https://braze.com/docs/api/api_limits); a scripted Reply's
    own headers win. Unscripted paths answer Braze's error shape `{"message", "errors"}`.
    """

    LIMIT = 250_000

    def __init__(self, clock=time.time):
        self.clock = clock
        self._count_lock = threading.Lock()
        self._window = None
        self._used = 0
        super().__init__()

    def headers_for(self, reply: Reply) -> dict:
        now = self.clock()
        window = int(now // 3600)
        with self._count_lock:
            if window != self._window:
                self._window, self._used = window, 0
            self._used += 1
            remaining = max(0, self.LIMIT - self._used)
        headers = {"X-RateLimit-Limit": str(self.LIMIT), "X-RateLimit-Remaining": str(remaining),
                   "X-RateLimit-Reset": str((window + 1) * 3600)}
        headers.update(reply.headers)
        return headers

    UNSCRIPTED = Reply(404, {"message": "Not Found", "errors": ["no such endpoint"]})


class LiveServer:
    """Serve a WSGI app on 127.0.0.1 in a thread; `url` is its base URL."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeClock:
    """An injectable wall clock; `tick(seconds)` moves it, nothing sleeps."""

    def __init__(self, start: float = 1_795_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class FixedLag:
    """A LoopLag stand-in (wallet_proxy/web/lag.py) whose standing and mean lag the test sets."""

    def __init__(self, standing: float = 0.0, mean: float | None = None):
        self.value = standing
        self.average = standing if mean is None else mean

    def standing(self) -> float:
        return self.value

    def mean(self) -> float:
        return self.average
