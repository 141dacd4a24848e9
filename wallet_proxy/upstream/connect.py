"""SessionM Connect client: the offer wallet (`get_user_offers`). No Flask here: the CLI reuses it."""
from __future__ import annotations

import logging

import requests
from marshmallow import ValidationError

from ..errors import UpstreamError, UpstreamUnavailable, UserNotFound
from ..wallet.payload import normalise_payload
from . import transport as upstream

log = logging.getLogger(__name__)

GET_USER_OFFERS = "/offers/api/2.0/offers/get_user_offers"


class ConnectClient:
    """Calls SessionM Connect's offer wallet for one user at a time."""

    def __init__(self, base_url: str, authorization: str, retailer_id: str, session: requests.Session):
        self.url = base_url.rstrip("/") + GET_USER_OFFERS
        self.retailer_id = retailer_id
        self.session = session
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": authorization}

    def fetch_raw(self, user_id: str, culture: str, timeout: float) -> upstream.Reply:
        """POST get_user_offers and return the raw reply (used by the preview page)."""
        body = {"retailer_id": self.retailer_id, "user_id": user_id, "skip": 0, "take": 1000,
                "include_pending_extended_data": False, "culture": culture}
        return upstream.call(self.session, "POST", self.url, json=body, headers=self._headers,
                             timeout=timeout, name="SessionM")

    def get_user_offers(self, user_id: str, culture: str, timeout: float) -> dict:
        """Return the normalised wallet of `user_id`, or raise the matching ApiError."""
        return interpret(self.fetch_raw(user_id, culture, timeout))


def interpret(reply: upstream.Reply) -> dict:
    """Map a get_user_offers reply to a normalised wallet or an ApiError (SPEC's error table)."""
    status = reply.status
    if status == 429 or status >= 500:
        raise UpstreamUnavailable(f"SessionM answered HTTP {status}",
                                  retry_after=upstream.retry_after_seconds(reply.headers, 2.0))
    if status in (401, 403):
        log.error("SessionM refused our credentials (HTTP %s): check SESSIONM_CONNECT_AUTH and "
                  "SESSIONM_RETAILER_ID", status)
        raise UpstreamError("SessionM refused this service's credentials")
    data = reply.data
    if not isinstance(data, dict):
        raise UpstreamError(f"SessionM answered HTTP {status} with a body that is not a JSON object")
    if not upstream.sessionm_ok(data):
        # HTTP 200 can carry `"status": "error"` and a code: one mapping for every SessionM client.
        code = upstream.sessionm_code(data)
        if code is None and status == 404:
            raise UserNotFound()
        if code is None and str(data.get("status")).lower() != "error":
            raise UpstreamError(f"SessionM answered HTTP {status} without status ok")
        raise upstream.sessionm_error(code, "SessionM")
    if status != 200:
        raise UpstreamError(f"SessionM answered HTTP {status} with status ok")
    try:
        wallet, dropped = normalise_payload(data.get("payload"))
    except ValidationError as exc:
        raise UpstreamError("SessionM's payload does not match get_user_offers: "
                            f"{_summary(exc.messages)}") from exc
    if dropped:
        log.warning("dropped %d unusable offer(s) from SessionM: %s", len(dropped),
                    "; ".join(f"#{i}: {_summary(m)}" for i, m in dropped[:5]))
    return wallet


def _summary(messages) -> str:
    if isinstance(messages, dict):
        return ", ".join(f"{k}: {_summary(v)}" for k, v in list(messages.items())[:4])
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages[:2])
    return str(messages)
