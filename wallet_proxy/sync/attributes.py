"""The Braze custom attributes of a wallet, and what changed since the last sync (pure: no Flask, no I/O).

Braze bills every attribute written as a data point, and its `/users/track` docs ask for "only deltas
(changing data)" (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/), so a sync
sends only the attributes whose value differs from what Braze last accepted for that profile.
Custom attribute types (https://www.braze.com/docs/user_guide/data_and_analytics/custom_data/
custom_attributes/): numbers, ISO 8601 strings stored as time, arrays of at most 25 items by default.
"""
from __future__ import annotations

from datetime import datetime, timezone

from ..wallet.view import is_servable

POINTS = "sessionm_available_points"
OFFER_COUNT = "sessionm_offer_count"
NEXT_EXPIRY = "sessionm_next_expiry"
OFFER_IDS = "sessionm_offer_ids"
SYNCED_AT = "sessionm_synced_at"
# The attributes compared between syncs (sessionm_synced_at only rides along with a change).
COMPARED = (POINTS, OFFER_COUNT, NEXT_EXPIRY, OFFER_IDS)
MAX_ARRAY = 25  # Braze: custom attribute arrays hold at most 25 items by default


def iso(ts: float) -> str:
    """Epoch seconds as Braze's time attributes take them: ISO 8601 UTC with `Z`."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def attributes(wallet: dict, now_ts: float) -> dict:
    """The loyalty attributes of a normalised wallet at `now_ts`, expired and redeemed offers left out.

    `sessionm_offer_ids` lists distinct offer ids, soonest expiry first (offers without an expiry
    last, then SessionM's order), at most 25, so the ones a marketer acts on first always fit.
    """
    offers = [offer for offer in wallet["offers"] if is_servable(offer, now_ts)]
    expiring = [offer["expires_ts"] for offer in offers if offer["expires_ts"] is not None]
    ordered = sorted(enumerate(offers), key=lambda pair: (pair[1]["expires_ts"] is None,
                                                          pair[1]["expires_ts"] or 0.0, pair[0]))
    ids: list = []
    for _, offer in ordered:
        offer_id = offer.get("offer_id")
        if offer_id is not None and str(offer_id) not in ids:
            ids.append(str(offer_id))
        if len(ids) == MAX_ARRAY:
            break
    points = wallet.get("available_points")
    return {
        POINTS: points,
        OFFER_COUNT: len(offers),
        NEXT_EXPIRY: iso(min(expiring)) if expiring else None,
        OFFER_IDS: ids,
    }


def changes(previous: dict | None, current: dict) -> dict:
    """The attributes of `current` that differ from `previous` (all of them when nothing is known)."""
    if previous is None:
        return {name: current[name] for name in COMPARED}
    return {name: current[name] for name in COMPARED if name not in previous or previous[name] != current[name]}


def track_object(external_id: str, changed: dict, now_ts: float) -> dict:
    """A `/users/track` attributes object: the changed attributes and `sessionm_synced_at`."""
    return {"external_id": external_id, **changed, SYNCED_AT: iso(now_ts)}
