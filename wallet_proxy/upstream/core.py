"""SessionM Core client: external-id lookup and user tags. No Flask here: the CLI reuses it.

Tags (https://docs.sessionm.com/developer/APIs/Core/Customers/customers_tags.htm): a tag sent without a
TTL is a counter, created at 1 and incremented by one on each call; with a TTL it is an expiring tag,
which a second call only renews. So a counter tag is never sent again once a call may have reached Core.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

import requests

from ..errors import (OutcomeUnknown, UpstreamError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable,
                      UserNotFound)
from . import pacing
from . import transport as upstream
from .retry import answered

log = logging.getLogger(__name__)


class CredentialsRefused(UpstreamError):
    """Core refused this service's key/secret: no later call can succeed (the importer stops)."""


class CounterOutcomeUnknown(OutcomeUnknown):
    """A counter tag (no ttl) was sent and Core did not answer, or answered a 5xx or
    `INTERNAL_SERVER_ERROR`: it may have been counted, so it must not be sent again. 409, which Braze
    does not retry (an expiring tag is a retryable 504/503 instead); the importer rejects the row."""

    status = 409
    message = ("SessionM Core did not answer after the counter tag was sent: it may have been counted, "
               "so it is not retried")


class TagsRefused(UpstreamRefused):
    """Core refused the tags themselves (a 4xx other than 401/403/404/429, or VALIDATION, MISSING_DATA,
    ARGUMENT_ERROR inside a 200): retrying cannot help, so a 422, which Braze does not retry."""


class CoreClient:
    """Calls SessionM Core's private API for one app."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, session: requests.Session):
        self.base = f"{base_url.rstrip('/')}/priv/v1/apps/{quote(api_key, safe='')}"
        self.session = session
        self.transport = upstream.Transport(session)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": upstream.basic_authorization(api_key, api_secret)}

    def _call(self, method: str, path: str, timeout: float, **kwargs) -> upstream.Reply:
        return self.transport.send(upstream.Request(method, self.base + path, name="SessionM Core",
                                                    timeout=timeout, headers=self._headers, **kwargs))

    def resolve_external_id(self, external_id: str, timeout: float) -> str:
        """Return the SessionM user id of a customer's external id, or raise UserNotFound."""
        reply = self._call("GET", f"/external/users/{quote(external_id, safe='')}", timeout)
        data = check(reply)
        user = data.get("user") if isinstance(data, dict) else None
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, (str, int)) or isinstance(user_id, bool) or str(user_id) == "":
            raise UpstreamError("SessionM Core's external-user answer has no user id")
        return str(user_id)

    def add_tags(self, user_id: str, tags: list, ttl: int | None, timeout: float,
                 external: bool = False) -> dict:
        """Add `tags` (optionally expiring after `ttl` seconds) to a user; raise the matching ApiError."""
        kind = "external/users" if external else "users"
        try:
            reply = self._call("POST", f"/{kind}/{quote(user_id, safe='')}/tags", timeout,
                               json=tags_body(tags, ttl))
        except (UpstreamTimeout, UpstreamUnavailable) as exc:
            if ttl is None and upstream.may_have_reached(exc):
                # A counter tag counts once per call it reaches: sending it again could count it twice.
                raise CounterOutcomeUnknown() from exc
            raise
        return tags_answer(reply, ttl)


def tags_answer(reply: upstream.Reply, ttl: int | None) -> dict:
    """Core's answer to a tags call, for a counter tag (no `ttl`) or an expiring one: the JSON object,
    or the matching ApiError (the same rule for the webhook and the importer)."""
    if ttl is None and may_have_counted(reply):
        code = upstream.sessionm_code(reply.data)
        raise CounterOutcomeUnknown(f"SessionM Core answered HTTP {reply.status}{f' ({code})' if code else ''} "
                                    "after the counter tag was sent: it may have been counted, so it is not "
                                    "retried")
    return interpret_tags(reply)


def may_have_counted(reply: upstream.Reply) -> bool:
    """Whether Core's answer leaves a counter tag possibly counted: a 5xx (the server failed somewhere
    after receiving the call) or `INTERNAL_SERVER_ERROR` inside the body. A 429 refused it unprocessed."""
    return reply.status >= 500 or upstream.sessionm_code(reply.data) == "INTERNAL_SERVER_ERROR"


def tags_body(tags: list, ttl: int | None) -> dict:
    """Core's tags body: `ttl` only for expiring tags (without it each send counts the tag once more)."""
    body: dict = {"tags": list(tags)}
    if ttl is not None:
        body["ttl"] = int(ttl)
    return body


def interpret_tags(reply: upstream.Reply) -> dict:
    """Map Core's answer to a tags call to its JSON object, or raise the matching ApiError."""
    if 400 <= reply.status < 500 and reply.status not in (401, 403, 404, 429):
        code = upstream.sessionm_code(reply.data)
        if code not in upstream.USER_NOT_FOUND_CODES:
            raise TagsRefused(f"SessionM Core refused the tags (HTTP {reply.status}"
                              f"{', ' + code if code else ''})")
    return check(reply, refused=TagsRefused)


def check(reply: upstream.Reply, refused=UpstreamRefused) -> dict:
    """Map a Core reply to its JSON object, or raise the matching ApiError.

    Core answers HTTP 200 with `"status": "ok"` or `"status": "error"` and a code, 401, 404 (not found
    by id) or 500 (https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm).
    Status and codes are read case-insensitively, and the codes inside a 200 mapped by the one shared
    table (upstream/transport.py): unknown user 404, our request refused as invalid `refused` (422,
    which Braze does not retry), our credentials refused 502 and logged loudly, anything else 502.
    """
    status = reply.status
    if status == 429 or status >= 500:
        error = UpstreamUnavailable(f"SessionM Core answered HTTP {status}",
                                    retry_after=upstream.retry_after_seconds(reply.headers, 2.0),
                                    status=429 if status == 429 else None)
        # What Core itself asked for (None without a header): the importer's backoff honours it, while
        # `retry_after` always carries a value for the Retry-After answered to Braze.
        error.upstream_retry_after = pacing.parse_retry_after(reply.headers.get("Retry-After"))
        raise answered(error, reply)  # the retry policy reads Core's own headers
    if status in (401, 403):
        log.error("SessionM Core refused our credentials (HTTP %s): check SESSIONM_CORE_API_KEY/SECRET",
                  status)
        raise CredentialsRefused("SessionM Core refused this service's credentials")
    data = reply.data
    code = upstream.sessionm_code(data)
    if status == 404 or (status >= 400 and code in upstream.USER_NOT_FOUND_CODES):
        raise UserNotFound()
    if not isinstance(data, dict):
        raise UpstreamError(f"SessionM Core answered HTTP {status} with a body that is not a JSON object")
    if status >= 400:
        raise UpstreamError(f"SessionM Core answered HTTP {status} ({code or 'no code'})")
    if not upstream.sessionm_ok(data):
        if code is None and str(data.get("status")).strip().lower() != "error":
            raise UpstreamError(f"SessionM Core answered HTTP {status} without status ok")
        raise upstream.sessionm_error(code, "SessionM Core", credentials=CredentialsRefused, refused=refused)
    return data
