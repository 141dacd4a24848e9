"""SessionM Connect client: the offer wallet (`get_user_offers`). No Flask here: the CLI reuses it."""
from __future__ import annotations

import logging
import time

import requests
from marshmallow import ValidationError

from .. import jsoncodec
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, UserNotFound, field_problems
from ..wallet.payload import normalise_payload, record_count
from . import transport as upstream
from .fast import Request

log = logging.getLogger(__name__)

GET_USER_OFFERS = "/offers/api/2.0/offers/get_user_offers"
# offers per page, as the get_user_offers example on Braze's SessionM page asks
# (https://braze.com/docs/partners/message_orchestration/channel_extensions/loyalty/sessionm)
TAKE = 1000
MAX_PAGES = 10  # 10,000 offers: far more than fits in a 1,000,000-byte answer anyway
MIN_PAGE_TIME = 0.05  # seconds a further page needs at least to be worth asking for


class ConnectClient:
    """Calls SessionM Connect's offer wallet for one user at a time."""

    def __init__(self, base_url: str, authorization: str, retailer_id: str, session: requests.Session,
                 transport=None):
        self.url = base_url.rstrip("/") + GET_USER_OFFERS
        self.retailer_id = retailer_id
        self.take = TAKE
        self.session = session
        # A faster transport for the hot call (upstream/fast.py under gevent), else the session's.
        self.transport = transport
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": authorization}
        self._post = upstream.JsonPost(session, self.url, self._headers)

    def fetch_raw(self, user_id: str, culture: str, timeout: float, skip: int = 0) -> upstream.Reply:
        """POST get_user_offers for one page and return the raw reply (the preview shows the first)."""
        body = {"retailer_id": self.retailer_id, "user_id": user_id, "skip": skip, "take": self.take,
                "include_pending_extended_data": False, "culture": culture}
        # idempotent: get_user_offers looks offers up and changes nothing (SessionM's "Look Up Offer",
        # https://docs.sessionm.com/developer/Tasks/Offers/t_look_up_offer.htm), so a send
        # lost to a closed kept-alive connection may go again
        if self.transport is not None:
            return self.transport.send(Request("POST", self.url, name="SessionM", timeout=timeout,
                                               headers=self._headers, content=jsoncodec.dumps(body),
                                               idempotent=True))
        if self._post.usable():
            return upstream.call(self.session, "POST", self.url, prepared=self._post.prepared(body),
                                 timeout=timeout, name="SessionM", idempotent=True)
        return upstream.call(self.session, "POST", self.url, json=body, headers=self._headers,
                             timeout=timeout, name="SessionM", idempotent=True)

    def get_user_offers(self, user_id: str, culture: str, timeout: float) -> dict:
        """Return the normalised wallet of `user_id`, or raise the matching ApiError.

        SessionM answers one page (`skip`, `take`) and says how many offers there are in
        `total_records`; while it holds more than we have, the next pages are fetched, all within
        `timeout` seconds. A page that fails fails the whole wallet: a silently partial wallet would
        be cached and served as complete.
        """
        until = time.monotonic() + timeout
        payload = checked_payload(self.fetch_raw(user_id, culture, timeout))
        offers = payload.get("user_offers")
        total = record_count(payload.get("total_records"))  # the one reader's: "12" is 12
        pages = 1
        while (isinstance(offers, list) and total > len(offers) and offers and pages < MAX_PAGES):
            left = until - time.monotonic()
            if left < MIN_PAGE_TIME:
                raise UpstreamTimeout(f"page {pages + 1} of SessionM offers did not fit in {timeout:.2f}s")
            # skip += take (what one full page holds); SessionM's pages are full but the last.
            page = checked_payload(self.fetch_raw(user_id, culture, left, skip=pages * self.take))
            more = page.get("user_offers")
            if not isinstance(more, list) or not more:
                break
            offers = offers + more
            pages += 1
        if pages > 1:
            payload = dict(payload, user_offers=offers)
        wallet = normalised(payload)
        if isinstance(offers, list) and total > len(offers):
            log.warning("SessionM holds %s offers for one user; serving the first %d", total, len(offers))
            wallet["truncated"] = True
        return wallet


def interpret(reply: upstream.Reply) -> dict:
    """Map one get_user_offers reply to a normalised wallet or an ApiError (SPEC's error table)."""
    return normalised(checked_payload(reply))


def checked_payload(reply: upstream.Reply) -> dict:
    """The `payload` object of an ok get_user_offers reply, or raise the matching ApiError."""
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
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise UpstreamError("SessionM's payload does not match get_user_offers: payload: must be an object")
    return payload


def normalised(payload: dict) -> dict:
    """The normalised wallet of a get_user_offers payload; a mismatched envelope is a 502."""
    try:
        wallet, dropped = normalise_payload(payload)
    except ValidationError as exc:
        raise UpstreamError("SessionM's payload does not match get_user_offers: "
                            f"{_summary(exc.messages)}") from exc
    if dropped:
        log.warning("dropped %d unusable offer(s) from SessionM: %s", len(dropped),
                    "; ".join(f"#{i}: {_summary(m)}" for i, m in dropped[:5]))
    return wallet


def _summary(messages) -> str:
    """The first few field problems of a SessionM payload, for a 502's message and the log."""
    return "; ".join(field_problems(messages)[:4])
