"""The fast path of payload normalisation gives exactly what the marshmallow schemas give.

`normalise_payload` reads plain offers without marshmallow (a miss's hottest work) and hands every
other form to the schemas; these tests hold the two paths equal on generated payloads, including
the odd forms (numeric strings, "true", garbled dates, null entries) that must take the schema path.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from tests.conftest import fixture_json
from tests.test_properties import any_json, payload as payloads
from wallet_proxy.wallet import payload as module
from wallet_proxy.wallet.payload import fast_offer, normalise_payload


def both(body):
    outcomes = []
    for fast in (True, False):
        try:
            outcomes.append(normalise_payload(body, fast=fast))
        except ValidationError as exc:
            outcomes.append(("refused", exc.messages))
    return outcomes


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=payloads | any_json)
def test_fast_and_schema_paths_agree(body):
    fast, reference = both(body)
    assert fast == reference


odd = st.sampled_from([None, "", "1", "true", "false", 0, 1, 1.5, 2**60, float("inf"), True, [], {}, "x",
                       "2026-12-31T23:59:59Z", "2026-12-31 23:59:59", 1798761599, 1798761599000, [None]])
field_names = st.sampled_from(["user_offer_id", "offer_id", "root_offer_id", "offer_group_id", "offer_type",
                               "name", "description", "terms", "logo_uri", "media", "pos_discount_id",
                               "start_date", "end_date", "expiration_date", "acquire_date", "redeem_date",
                               "is_redeemable", "categories", "category_ids"])


@settings(max_examples=600, deadline=None)
@given(changes=st.dictionaries(field_names, odd, max_size=4),
       envelope=st.dictionaries(st.sampled_from(["user_id", "total_points", "available_points", "user",
                                                 "offer_groups", "offer_categories"]), odd, max_size=3))
def test_odd_forms_agree_field_by_field(changes, envelope):
    body = fixture_json("get_user_offers.ok.json")["payload"]
    body["user_offers"][0].update(changes)
    body.update(envelope)
    fast, reference = both(body)
    assert fast == reference


def test_the_plain_form_skips_the_schemas(monkeypatch):
    """The common case really takes the fast path (else the benchmark measures nothing new)."""
    calls = []
    monkeypatch.setattr(module._offer, "load", lambda item: calls.append(item))
    body = fixture_json("get_user_offers.ok.json")["payload"]
    wallet, dropped = normalise_payload(body)
    assert calls == [] and len(wallet["offers"]) == 1 and dropped == []
    assert fast_offer({"name": "x", "is_redeemable": "true"}) is None  # an odd form: the schema decides
