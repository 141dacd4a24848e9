"""SessionM Connect simulator: deterministic, realistic offer wallets for any user id."""
from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone

from flask import Blueprint, current_app, jsonify, request

from .faults import delay_headers, fault_response, latency_for, refuse_without_basic

bp = Blueprint("sandbox_connect", __name__)

GROUPS = [
    ("0c6f4e2a-0000-4000-8000-000000000001", "All Offers", 0),
    ("0c6f4e2a-0000-4000-8000-000000000002", "Birthday", 1),
    ("0c6f4e2a-0000-4000-8000-000000000003", "Weekly Deals", 2),
]
CATEGORIES = [
    ("9a82f973-0000-4000-8000-000000000001", "Food & Drink", 0),
    ("9a82f973-0000-4000-8000-000000000002", "Retail", 1),
    ("9a82f973-0000-4000-8000-000000000003", "Points", 2),
]
# (title, description, terms, offer_type, group index, category index, POS id, French title);
# offer types as SessionM documents them (manual_fulfillment, fixed_amount_discount, percent_discount).
CATALOG = [
    ("Free medium coffee", "One medium coffee of your choice.", "Valid in participating stores. One per customer.",
     "manual_fulfillment", 0, 0, "POS-1001", "Café moyen offert"),
    ("10% off your next order", "Save 10% on any order over $20.", "Excludes gift cards.",
     "percent_discount", 2, 1, "POS-2010", "10 % de remise sur votre prochaine commande"),
    ("Double points weekend", "Earn 2x points on every purchase this weekend.", "Points post within 48 hours.",
     "manual_fulfillment", 2, 2, None, "Points doublés ce week-end"),
    ("Birthday treat", "A free pastry to celebrate your birthday.", "Valid for 30 days from issue.",
     "manual_fulfillment", 1, 0, "POS-3001", "Douceur d'anniversaire"),
    ("Free shipping", "Free standard shipping on your next online order.", "Online only.",
     "fixed_amount_discount", 0, 1, "POS-4004", "Livraison offerte"),
    ("$5 reward", "$5 off any purchase of $25 or more.", "Cannot be combined with other offers.",
     "fixed_amount_discount", 0, 1, "POS-5005", "Récompense de 5 $"),
    ("Bonus 500 points", "500 bonus points when you try a new menu item.", "One per customer.",
     "manual_fulfillment", 2, 2, None, "500 points bonus"),
    ("Free upsize", "Upsize any drink for free.", "Hot or iced drinks only.",
     "manual_fulfillment", 0, 0, "POS-6006", "Format supérieur offert"),
]


def _uuid(rng: random.Random) -> str:
    return "%08x-%04x-4%03x-%04x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                                           0x8000 | rng.getrandbits(14), rng.getrandbits(48))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_wallet(user_id: str, culture: str, now: datetime) -> dict:
    """Build the get_user_offers payload of `user_id`: same user, same day, same wallet."""
    seed = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    french = culture.lower().startswith("fr")
    picks = rng.sample(range(len(CATALOG)), rng.randint(3, 6))
    offers = []
    for n, index in enumerate(picks):
        title, description, terms, offer_type, group, category, pos, title_fr = CATALOG[index]
        issued = day - timedelta(days=rng.randint(1, 40), hours=rng.randint(0, 23))
        # about one offer in four has already expired: the service must never show it
        if n == 1 or rng.random() < 0.15:
            expires = day - timedelta(days=rng.randint(1, 10)) + timedelta(hours=23, minutes=59, seconds=59)
        else:
            expires = day + timedelta(days=rng.randint(2, 60), hours=23, minutes=59, seconds=59)
        offer = {
            "user_offer_id": _uuid(rng),
            "offer_id": _uuid(rng),
            "root_offer_id": _uuid(rng),
            "offer_group_id": GROUPS[group][0],
            "offer_type": offer_type,
            "name": title_fr if french else title,
            "description": description,
            "terms": terms,
            "pos_discount_id": pos,
            "start_date": _iso(issued - timedelta(days=1)),
            "acquire_date": _iso(issued),
            "expiration_date": _iso(expires),
            "redeem_date": None,
            "is_redeemable": True,
            "categories": [CATEGORIES[category][0]],
        }
        if n % 2:  # media as SessionM sends it: content_type 1 image, 2 video, 4 audio, 5 web link
            offer["media"] = [
                {"uri": f"https://cdn.example.com/offers/{index}.mp4", "content_type": 2,
                 "category_id": "video", "category_name": "video"},
                {"uri": f"https://cdn.example.com/offers/{index}.png", "content_type": 1,
                 "category_id": "logo", "category_name": "logo"}]
        else:
            offer["logo_uri"] = f"https://cdn.example.com/offers/{index}.png"
        offers.append(offer)
    if rng.random() < 0.3:  # sometimes a redeemed one, which must not be shown either
        offers[-1]["redeem_date"] = _iso(day - timedelta(days=1))
    total = rng.randint(5, 50) * 100 + rng.randint(0, 9) * 10
    return {
        "user": {"opted_in": rng.random() < 0.7, "activated": True},
        "user_id": user_id,
        "user_offers": offers,
        "total_records": len(offers),
        "offer_groups": [{"id": g, "name": name, "sort_order": order} for g, name, order in GROUPS],
        "offer_categories": [{"id": c, "name": name, "sort_order": order} for c, name, order in CATEGORIES],
        "total_points": total,
        "available_points": rng.randint(0, total // 10) * 10,
    }


@bp.post("/offers/api/2.0/offers/get_user_offers")
def get_user_offers():
    sim = current_app.config["SIM"]
    refused = refuse_without_basic(sim, "get_user_offers")
    if refused:
        return refused
    body = request.get_json(silent=True) or {}
    user_id = str(body.get("user_id") or "")
    fault = sim.fault_for(user_id)
    latency = latency_for(sim, fault)
    answer = fault_response(fault, latency)
    if answer is not None:
        return answer
    headers = delay_headers(latency)
    # Errors come inside HTTP 200 with a code, upper case in SessionM's table and lower case in its
    # example (https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm):
    # the simulator sends both, so the service must compare them case-insensitively.
    if fault == "unknown":
        return jsonify(status="error", errors={"code": "USER_NOT_FOUND", "message": "User not found"}), 200, \
            headers
    if fault == "fault-invalid" or not user_id:
        return jsonify(status="error", errors={"code": "validation" if user_id else "missing_data",
                                               "message": "Invalid request"}), 200, headers
    now = datetime.fromtimestamp(sim.clock(), tz=timezone.utc)
    payload = make_wallet(user_id, str(body.get("culture") or "en-US"), now)
    # One page (`skip`, `take`), with `total_records` counting them all, as get_user_offers pages.
    skip, take = _int(body.get("skip"), 0), _int(body.get("take"), 1000)
    payload["user_offers"] = payload["user_offers"][skip:skip + take]
    # The api/2.0 offers pages spell the success status `OK` (Braze's SessionM page writes `ok`).
    return jsonify(status="OK", payload=payload), 200, headers


def _int(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
