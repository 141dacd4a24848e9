"""One payload reader (issue #20 item 5) gives exactly what the marshmallow schemas gave.

Before the step, `normalise_payload` read plain offers by a fast path and handed every other form to
marshmallow schemas: two parsers for one payload. Now one reader reads every form in one pass. These
tests hold it equal -- wallet, dropped offers and the reasons given for a refusal -- to the schemas as
they were (kept in `tests/payload_reference.py`), on generated payloads including the odd forms
(numeric strings, "true", garbled dates, null entries) that used to take the schema path.
"""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from tests import payload_reference
from tests.conftest import fixture_json
from tests.test_properties import any_json, payload as payloads
from wallet_proxy.wallet.payload import normalise_payload


def outcome(read, body):
    try:
        return read(copy.deepcopy(body))
    except ValidationError as exc:
        return ("refused", exc.messages)


def both(body):
    return outcome(normalise_payload, body), outcome(payload_reference.normalise_payload, body)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=payloads | any_json)
def test_the_reader_and_the_old_schemas_agree(body):
    ours, reference = both(body)
    assert ours == reference


odd = st.sampled_from([None, "", "1", "true", "false", "TRUE", "nan", "1e400", 0, 1, 2, -1, 1.0, 1.5, 2**60, 2**53,
                       -2**53, float("inf"), True, False, [], {}, "x", "2026-12-31T23:59:59Z",
                       "2026-12-31 23:59:59", 1798761599, 1798761599000, [None], [{"id": "c"}], ["c", 2]])
field_names = st.sampled_from(["user_offer_id", "offer_id", "root_offer_id", "offer_group_id", "offer_type",
                               "name", "description", "terms", "logo_uri", "media", "pos_discount_id",
                               "start_date", "end_date", "expiration_date", "acquire_date", "redeem_date",
                               "is_redeemable", "categories", "category_ids"])
envelope_names = st.sampled_from(["user_id", "total_points", "available_points", "user", "user_offers",
                                  "offer_groups", "offer_categories"])


@settings(max_examples=800, deadline=None)
@given(changes=st.dictionaries(field_names, odd, max_size=4),
       envelope=st.dictionaries(envelope_names, odd, max_size=3),
       group=st.dictionaries(st.sampled_from(["id", "name", "sort_order"]), odd, max_size=3),
       user=st.dictionaries(st.sampled_from(["opted_in", "activated"]), odd, max_size=2))
def test_odd_forms_agree_field_by_field_with_the_same_reasons(changes, envelope, group, user):
    body = fixture_json("get_user_offers.ok.json")["payload"]
    body["user_offers"][0].update(changes)
    body["offer_groups"] = [group, {"id": "g2", "name": "Two", "sort_order": 2}]
    body["user"] = user
    body.update(envelope)
    ours, reference = both(body)
    assert ours == reference


def test_a_dropped_offer_names_every_field_and_reason():
    body = fixture_json("get_user_offers.ok.json")["payload"]
    body["user_offers"][0].update(name=True, expiration_date="soon", media="x", start_date="garbled")
    wallet, dropped = normalise_payload(body)
    assert wallet["offers"] == [] and [index for index, _ in dropped] == [0]
    reasons = dropped[0][1]
    assert reasons["name"] == ["must be a string"] and reasons["media"] == ["Not a valid list."]
    assert reasons["expiration_date"] == ["not an ISO 8601 date: 'soon'"]
    assert "start_date" not in reasons, "a garbled start date only loses that date"
