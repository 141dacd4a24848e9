"""SessionM Core client: external-id lookup and user tags. No Flask here: the CLI reuses it."""
from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import requests

from ..errors import InvalidRequest, UpstreamError, UpstreamUnavailable, UserNotFound
from . import transport as upstream

log = logging.getLogger(__name__)


class CredentialsRefused(UpstreamError):
    """Core refused this service's key/secret: no later call can succeed (the importer stops)."""


class TagsRefused(InvalidRequest):
    """Core refused the tags themselves (a 4xx other than 401/403/404/429): retrying cannot help."""

    status = 422


def basic(key: str, secret: str) -> str:
    """Core's Authorization header: Basic base64(api_key:api_secret)."""
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


class CoreClient:
    """Calls SessionM Core's private API for one app."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, session: requests.Session):
        self.base = f"{base_url.rstrip('/')}/priv/v1/apps/{quote(api_key, safe='')}"
        self.session = session
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": basic(api_key, api_secret)}

    def _call(self, method: str, path: str, timeout: float, **kwargs) -> upstream.Reply:
        return upstream.call(self.session, method, self.base + path, headers=self._headers,
                             timeout=timeout, name="SessionM Core", **kwargs)

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
        reply = self._call("POST", f"/{kind}/{quote(user_id, safe='')}/tags", timeout,
                           json=tags_body(tags, ttl))
        return interpret_tags(reply)


def tags_body(tags: list, ttl: int | None) -> dict:
    """Core's tags body: `ttl` only for expiring tags (without it each send counts the tag once more)."""
    body: dict = {"tags": list(tags)}
    if ttl is not None:
        body["ttl"] = int(ttl)
    return body


def interpret_tags(reply: upstream.Reply) -> dict:
    """Map Core's answer to a tags call to its JSON object, or raise the matching ApiError."""
    if 400 <= reply.status < 500 and reply.status not in (401, 403, 404, 429):
        errors = reply.data.get("errors") if isinstance(reply.data, dict) else None
        code = errors.get("code") if isinstance(errors, dict) else None
        if code not in ("user_not_found", "not_found"):
            raise TagsRefused(f"SessionM Core refused the tags (HTTP {reply.status}"
                              f"{', ' + str(code)[:64] if code else ''})")
    return check(reply)


def check(reply: upstream.Reply) -> dict:
    """Map a Core reply to its JSON object, or raise the matching ApiError."""
    status = reply.status
    if status == 429 or status >= 500:
        error = UpstreamUnavailable(f"SessionM Core answered HTTP {status}",
                                    retry_after=upstream.retry_after_seconds(reply.headers, 2.0),
                                    status=429 if status == 429 else None)
        # What Core itself asked for (None without a header): the importer's backoff honours it, while
        # `retry_after` always carries a value for the Retry-After answered to Braze.
        error.upstream_retry_after = upstream.retry_after_seconds(reply.headers, None)
        raise error
    if status in (401, 403):
        log.error("SessionM Core refused our credentials (HTTP %s): check SESSIONM_CORE_API_KEY/SECRET",
                  status)
        raise CredentialsRefused("SessionM Core refused this service's credentials")
    data = reply.data
    if not isinstance(data, dict):
        raise UpstreamError(f"SessionM Core answered HTTP {status} with a body that is not a JSON object")
    errors = data.get("errors")
    code = errors.get("code") if isinstance(errors, dict) else None
    if status == 404 or code in ("user_not_found", "not_found"):
        raise UserNotFound()
    if status >= 400 or data.get("status") == "error":
        raise UpstreamError(f"SessionM Core answered an error ({str(code)[:64] if code else status})")
    return data
