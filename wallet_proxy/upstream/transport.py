"""The one way to call an upstream: `Transport.send(Request) -> Reply`, and the SessionM error table.

Every client of an upstream (SessionM Connect and Core, Braze triggers and `/users/track`) sends its
HTTP through a `Transport`, in the spirit of httpx's transports: one method, `send(request) -> reply`.
No other module calls `session.post` / `session.request`.

The interface (a faster client may stand behind it as long as it keeps this contract):

- `Request(method, url, name=, timeout=, headers=, json=, content=, idempotent=, prepared=)`:
  `timeout` is the most seconds for this one call, set by whoever waits for it (the caller caps it by
  its own deadline); a `json` body is encoded by `jsoncodec` (compact UTF-8, non-ASCII kept), `content`
  is sent as given; `idempotent` says the call changes nothing (it is then sent once more when a
  kept-alive connection was closed unanswered); `prepared` is a `requests.PreparedRequest` made once
  (`JsonPost`) and sent as it is.
- `Reply(status, headers, data, elapsed, text)`: `data` is the decoded JSON (None when the body is
  empty or not JSON), `headers` a case-insensitive mapping, `text` the first 200 characters for
  messages. Every HTTP status is a Reply: what a status means is the client's business.
- A failure before any answer raises an ApiError: `UpstreamUnavailable` (refused, connect timeout,
  dropped), `UpstreamTimeout` (no answer in time) or `UpstreamError`; each carries `reached`
  (`may_have_reached(exc)`): False only when the request cannot have reached the server (the connection
  was never made), so a caller of a call that is not safe twice (a Braze send, a counter tag) knows
  whether the outcome is unknown.

Retrying is not the transport's: the one retry policy is `upstream/retry.py`.
"""
from __future__ import annotations

import base64
import http.client
import logging
import time
import urllib.request
from dataclasses import dataclass

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from ..errors import (ApiError, InvalidRequest, UpstreamError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable,
                      UserNotFound)
from .. import jsoncodec
from . import retry as policy


def basic_token(user: str, secret: str) -> str:
    """The credentials part of an HTTP Basic header: base64("user:secret") (RFC 7617)."""
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def basic_authorization(user: str, secret: str) -> str:
    """An `Authorization: Basic ...` header value: SessionM Core's and our own clients' form."""
    return "Basic " + basic_token(user, secret)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_CAP = 0.5  # a healthy loopback/LAN/TLS connect is far below this; fail fast otherwise


def make_session(pool_size: int) -> requests.Session:
    """Return a Session whose connection pool holds `pool_size` connections per host.

    requests' default pool keeps 10 connections; with 64 calls in flight the other 54 would open
    and throw away a connection (and a TLS handshake) each time.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 10), max_retries=0,
                          pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "wallet-proxy/0.1"
    if not urllib.request.getproxies():
        # With trust_env, requests re-reads every environment variable (proxies) and stats ~/.netrc on
        # each call -- a good part of a miss's CPU -- and a ~/.netrc entry would replace the
        # Authorization header we set. Read the environment once instead; with a proxy configured,
        # leave requests' own handling (NO_PROXY included) as it is.
        # requests' own reading of its CA-bundle variables, done once
        session.verify = session.merge_environment_settings("https://example.invalid/", {}, None, True,
                                                            None)["verify"]
        session.trust_env = False
    return session


@dataclass
class Reply:
    """An upstream answer: status, headers, decoded JSON (or None) and the elapsed seconds."""

    status: int
    headers: dict
    data: object
    elapsed: float
    text: str = ""


_NO_BODY = object()


@dataclass
class Request:
    """One upstream call, as the transport sends it (see the module's docstring)."""

    method: str
    url: str
    name: str = "upstream"
    timeout: float = 10.0
    headers: dict | None = None
    json: object = _NO_BODY
    content: bytes | None = None
    idempotent: bool = False
    prepared: requests.PreparedRequest | None = None
    connect_timeout: float = 0.5  # CONNECT_TIMEOUT_CAP; a far upstream (Braze over TLS) may ask for more


def retry_after_seconds(headers, default: float = 1.0) -> float:
    """Read `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch seconds), else `default`."""
    told = policy.RetryPolicy(told_cap=float("inf")).told(429, headers)
    return default if told is None else told


def closed_unanswered(exc: BaseException) -> bool:
    """Whether a requests ConnectionError is the peer closing the connection before any answer:
    what a kept-alive connection meets when the server's idle timeout closed it just as we sent."""
    while isinstance(exc, BaseException):
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return True
        # requests and urllib3 wrap the socket's error as an argument: ConnectionError(ProtocolError(
        # "Connection aborted.", RemoteDisconnected(...)))
        exc = next((arg for arg in reversed(exc.args) if isinstance(arg, BaseException)), None)
    return False


def never_sent(exc: BaseException) -> bool:
    """Whether a requests failure happened before a byte of the request could reach the server:
    a connect timeout, a refused connection or a failed name lookup."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the real cause
        return isinstance(reason, (urllib3.exceptions.NewConnectionError,
                                   urllib3.exceptions.ConnectTimeoutError,
                                   urllib3.exceptions.NameResolutionError))
    return False


def may_have_reached(exc: BaseException) -> bool:
    """Whether the failed call an ApiError stands for may have reached the server (see `Transport`)."""
    reached = getattr(exc, "reached", None)
    return True if reached is None else bool(reached)


def observe(session: requests.Session, observer) -> None:
    """Have every Transport over `session` report each call: `observer(request, reply, error, seconds)`
    with the Reply, or the ApiError raised (its `__cause__` is the transport's own exception)."""
    session.wallet_proxy_observers = (*getattr(session, "wallet_proxy_observers", ()), observer)


class Transport:
    """Sends `Request`s over a pooled `requests.Session`; the only caller of the session."""

    def __init__(self, session: requests.Session):
        self.session = session

    def send(self, request: Request) -> Reply:
        """Send `request` (see `_send`), reporting it to the session's observers (metrics)."""
        observers = getattr(self.session, "wallet_proxy_observers", ())
        if not observers:
            return self._send(request)
        started = time.monotonic()
        try:
            reply = self._send(request)
        except ApiError as exc:
            for observer in observers:
                observer(request, None, exc, time.monotonic() - started)
            raise
        for observer in observers:
            observer(request, reply, None, time.monotonic() - started)
        return reply

    def _send(self, request: Request) -> Reply:
        """Make one HTTP call; map transport failures to ApiErrors, never leak headers or secrets.

        `idempotent` requests (SessionM's get_user_offers is a POST that changes nothing) are sent once
        more, on another connection and within the same `timeout`, when the server closed the
        connection without answering -- the race between its keep-alive idle timeout and our reuse of
        that pooled connection. Counting that race as the upstream failing would feed the breaker a
        failure that is nobody's. Writes (Core tags, Braze sends) are never repeated here.
        """
        timeout = request.timeout
        started = time.monotonic()
        try:
            response = self._request(request, timeout)
        except requests.exceptions.ConnectionError as exc:
            left = timeout - (time.monotonic() - started)
            if not (request.idempotent and closed_unanswered(exc) and left > 0.05):
                raise _mapped(exc, request.name, timeout) from exc
            log.info("%s closed a kept-alive connection without answering; sent again", request.name)
            try:
                response = self._request(request, left)
            except requests.exceptions.RequestException as again:
                raise _mapped(again, request.name, timeout) from again
        except requests.exceptions.RequestException as exc:
            raise _mapped(exc, request.name, timeout) from exc
        elapsed = time.monotonic() - started
        content = response.content
        try:
            # JSON between systems is UTF-8 (RFC 8259 section 8.1), so the bytes are read as such
            data = jsoncodec.loads(content) if content else None
        except ValueError:
            data = None
        return Reply(response.status_code, response.headers, data, elapsed, _snippet(response, content))

    def _request(self, request: Request, timeout: float):
        session = self.session
        timeouts = (min(request.connect_timeout, timeout), timeout)
        if request.prepared is not None:
            return session.send(request.prepared, timeout=timeouts, allow_redirects=False, proxies=NO_PROXIES,
                                stream=False, verify=session.verify, cert=session.cert)
        data = request.content
        headers = request.headers
        if request.json is not _NO_BODY:
            data = encoded(request.json)
            headers = {"Content-Type": "application/json", **(headers or {})}
        return session.request(request.method, request.url, data=data, headers=headers, timeout=timeouts,
                               allow_redirects=False)


def encoded(body) -> bytes:
    """A JSON body as compact UTF-8 (jsoncodec); text UTF-8 cannot carry (an unpaired surrogate such as
    "\\ud800") is the caller's bad input, a 400 before anything is sent."""
    try:
        return jsoncodec.dumps(body)
    except UnicodeEncodeError as exc:
        raise InvalidRequest("the body holds an unpaired surrogate (\\ud800-\\udfff), which JSON text "
                             "cannot carry", details={"body": ["unpaired surrogate"]}) from exc


def call(session: requests.Session, method: str, url: str, *, timeout: float, name: str,
         idempotent: bool = False, prepared=None, json=_NO_BODY, headers=None, data=None) -> Reply:
    """`Transport(session).send(Request(...))` in one call (the form Connect and Core were written in)."""
    return Transport(session).send(Request(method, url, name=name, timeout=timeout, headers=headers, json=json,
                                           content=data, idempotent=idempotent, prepared=prepared))


NO_PROXIES: dict = {}


class JsonPost:
    """A JSON POST prepared once (URL, headers, the session's defaults) and sent with a new body each time.

    `Session.request` merges the session's settings into each call, re-parses the URL and encodes
    the body with the standard library's json: about a tenth of a wallet miss's CPU, spent
    identically on every call. Sending a copy of one prepared request with the body encoded by
    orjson skips that. Only for a session that takes nothing from the environment per call
    (`make_session` turns `trust_env` off when no proxy is configured): `usable()` says so, and the
    caller falls back to `call(..., json=...)` otherwise. No cookies ride along: SessionM's API is
    stateless, and one user's load-balancer cookie has no business on every other user's call.
    """

    def __init__(self, session: requests.Session, url: str, headers: dict):
        self.session = session
        self._prepared = session.prepare_request(requests.Request("POST", url, headers=headers))
        self._prepared.headers.pop("Cookie", None)

    def usable(self) -> bool:
        return not self.session.trust_env

    def prepared(self, body) -> requests.PreparedRequest:
        """A copy of the prepared POST carrying `body` as compact UTF-8 JSON."""
        request = self._prepared.copy()
        request.body = jsoncodec.dumps(body)
        request.headers["Content-Length"] = str(len(request.body))
        return request


def _mapped(exc: requests.exceptions.RequestException, name: str, timeout: float) -> ApiError:
    """The ApiError a transport failure stands for (the caller raises it from `exc`), with `reached`."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        error = UpstreamUnavailable(f"{name} did not accept a connection in time", retry_after=1)
    elif isinstance(exc, requests.exceptions.Timeout):
        error = UpstreamTimeout(f"{name} did not answer within {timeout:.2f}s")
    elif isinstance(exc, requests.exceptions.ConnectionError):
        error = UpstreamUnavailable(f"{name} refused or dropped the connection", retry_after=1)
    else:
        error = UpstreamError(f"{name} call failed: {type(exc).__name__}")
    error.reached = not never_sent(exc)
    return error


def _snippet(response: requests.Response, content: bytes) -> str:
    """The start of an answer's text, for error messages: its declared charset, else (or when the
    charset is not one Python knows, as `requests.Response.text` does) UTF-8 with replacements."""
    try:
        text = content[:800].decode(response.encoding or "utf-8", "replace")
    except LookupError:  # e.g. `charset=made-up` from a proxy's error page
        text = content[:800].decode("utf-8", "replace")
    return text[:200]

# SessionM's status and error codes inside an HTTP 200, one mapping for every SessionM client.
# Codes: https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm ("200 ...
# returned string can be either ok or error"). SessionM's api/2.0 pages spell the status `OK`, Braze's
# SessionM page `ok`, and codes come in either case: every comparison is case-insensitive.
USER_NOT_FOUND_CODES = frozenset({"USER_NOT_FOUND", "REQUIRES_REGISTERED_USER"})
REFUSED_CODES = frozenset({"VALIDATION", "MISSING_DATA", "ARGUMENT_ERROR"})
CREDENTIAL_CODES = frozenset({"INVALID_API_KEY", "INVALID_AUTH_TOKEN", "ACCESS_DENIED"})


def sessionm_ok(data) -> bool:
    """Whether a SessionM body says `"status": "ok"` (in any case)."""
    status = data.get("status") if isinstance(data, dict) else None
    return isinstance(status, str) and status.strip().upper() == "OK"


def sessionm_code(data) -> str | None:
    """The upper-cased `errors.code` of a SessionM body (`errors` an object, or a list of them)."""
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list) and errors:
        errors = errors[0]
    code = errors.get("code") if isinstance(errors, dict) else None
    return (code.strip().upper()[:64] or None) if isinstance(code, str) else None


def sessionm_error(code: str | None, name: str, *, credentials=UpstreamError,
                   refused=UpstreamRefused) -> ApiError:
    """The ApiError a SessionM error code stands for (SPEC's table); the caller raises it.

    Unknown user -> 404; our request refused as invalid -> `refused` (422, never retried); our
    credentials refused -> `credentials` (502), logged loudly; anything else -> 502.
    """
    if code in USER_NOT_FOUND_CODES:
        return UserNotFound()
    if code in REFUSED_CODES:
        return refused(f"{name} refused the request as invalid ({code})")
    if code in CREDENTIAL_CODES:
        log.error("%s refused this service's credentials (%s): check its settings", name, code)
        return credentials(f"{name} refused this service's credentials ({code})")
    return UpstreamError(f"{name} answered an error ({code or 'no code'})")
