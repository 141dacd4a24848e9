"""SessionM's get_user_offers payload -> the normalised wallet: the field forms SessionM may send.

SessionM's Connect reference (https://docs.sessionm.com/developer/offers/api_2-0.html, "get user
offers") lists the offer fields but not their exact JSON types; these tests pin down what we accept
so that a change cannot silently drop offers or fail whole wallets with a 502.
"""
from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from tests import payload_reference
from tests.conftest import fixture_json
from wallet_proxy.wallet import payload as module
from wallet_proxy.wallet.payload import iso, normalise_payload, parse_time


def payload(**offer_changes) -> dict:
    body = fixture_json("get_user_offers.ok.json")["payload"]
    body["user_offers"][0].update(offer_changes)
    return body


def one_offer(**changes) -> dict:
    wallet, dropped = normalise_payload(payload(**changes))
    assert dropped == [], dropped
    (offer,) = wallet["offers"]
    return offer


class TestExplicitNulls:
    """An explicit `null` is the same as a missing field: the offer stays, the field is None."""

    @pytest.mark.parametrize("field, key", [
        ("description", "description"), ("terms", "terms"), ("name", "title"),
        ("pos_discount_id", "pos_discount_id"), ("offer_type", "offer_type"), ("logo_uri", "logo_url"),
        ("offer_group_id", "group_id"), ("expiration_date", "expires_at"),
    ])
    def test_a_null_field_keeps_the_offer(self, field, key):
        offer = one_offer(**{field: None})
        assert offer[key] is None

    def test_null_is_redeemable_means_redeemable(self):
        assert one_offer(is_redeemable=None)["redeemable"] is True

    def test_null_redeem_date_is_not_redeemed(self):
        assert one_offer(redeem_date=None)["redeemed"] is False

    @pytest.mark.parametrize("points", ["total_points", "available_points"])
    def test_null_points_are_none_not_an_error(self, points):
        body = payload()
        body[points] = None
        wallet, _ = normalise_payload(body)
        assert wallet[points] is None
        other = "available_points" if points == "total_points" else "total_points"
        assert wallet[other] == fixture_json("get_user_offers.ok.json")["payload"][other]

    def test_null_media_and_categories_are_empty(self):
        offer = one_offer(media=None, categories=None, logo_uri=None)
        assert offer["category_ids"] == [] and offer["logo_url"] is None

    def test_null_user_keeps_the_wallet(self):
        body = payload()
        body["user"] = None
        wallet, _ = normalise_payload(body)
        assert wallet["user"] == {"opted_in": None, "activated": None}

    def test_null_catalogues_are_empty(self):
        body = payload()
        body["offer_groups"] = None
        body["offer_categories"] = None
        wallet, _ = normalise_payload(body)
        assert wallet["groups"] == [] and wallet["categories"] == []
        assert len(wallet["offers"]) == 1


class TestFlags:
    @pytest.mark.parametrize("value, expected", [
        (True, True), (False, False), ("true", True), ("false", False), ("TRUE", True), ("False", False),
        (1, True), (0, False),
    ])
    def test_is_redeemable_forms(self, value, expected):
        assert one_offer(is_redeemable=value)["redeemable"] is expected

    @pytest.mark.parametrize("value", ["yes", 2, -1, "1", [], {}])
    def test_an_unreadable_flag_drops_only_that_offer(self, value):
        wallet, dropped = normalise_payload(payload(is_redeemable=value))
        assert wallet["offers"] == [] and [index for index, _ in dropped] == [0]

    @pytest.mark.parametrize("value, expected", [("true", True), (0, False), (1, True), (False, False)])
    def test_user_flags_accept_the_same_forms(self, value, expected):
        body = payload()
        body["user"] = {"opted_in": value, "activated": value, "email": "someone@example.com"}
        wallet, _ = normalise_payload(body)
        assert wallet["user"] == {"opted_in": expected, "activated": expected}


class TestPoints:
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "inf", "-Infinity"])
    def test_non_finite_points_are_refused(self, value):
        body = payload()
        body["available_points"] = value
        with pytest.raises(ValidationError):
            normalise_payload(body)

    @pytest.mark.parametrize("value, expected", [
        (100, 100), (100.0, 100), ("250", 250), ("12.5", 12.5), (-3, -3), (0, 0), (2**53 + 1, float(2**53 + 1)),
    ])
    def test_numbers_come_out_as_int_when_integral(self, value, expected):
        body = payload()
        body["available_points"] = value
        got = normalise_payload(body)[0]["available_points"]
        assert got == expected and type(got) is type(expected)

    @pytest.mark.parametrize("value", [True, False, "lots", [1], {"n": 1}])
    def test_non_numbers_are_refused(self, value):
        body = payload()
        body["total_points"] = value
        with pytest.raises(ValidationError):
            normalise_payload(body)


class TestTimes:
    # 10**11 seconds is the year 5138; SessionM's millisecond stamps of today are ~1.8e12.
    @pytest.mark.parametrize("value, expected", [
        (10**11, datetime.fromtimestamp(10**11, tz=timezone.utc)),
        (10**11 + 1, datetime.fromtimestamp((10**11 + 1) / 1000, tz=timezone.utc)),
        (1798761599, datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        (1798761599000, datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        (1798761599.5, datetime(2026, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc)),
        (0, datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ])
    def test_epoch_seconds_and_milliseconds(self, value, expected):
        assert parse_time(value) == expected

    @pytest.mark.parametrize("text", ["2026-12-31T23:59:59z", "2026-12-31T23:59:59Z", " 2026-12-31T23:59:59Z ",
                                      "2026-12-31T23:59:59+00:00", "2027-01-01T01:59:59+02:00",
                                      "2026-12-31T18:59:59-05:00", "2026-12-31 23:59:59"])
    def test_every_form_of_one_instant_is_the_same_utc_instant(self, text):
        parsed = parse_time(text)
        assert parsed == datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
        assert parsed.utcoffset().total_seconds() == 0

    def test_a_date_without_offset_is_utc_whatever_the_machine_zone(self, monkeypatch):
        import time

        monkeypatch.setenv("TZ", "Pacific/Auckland")
        time.tzset()
        try:
            assert parse_time("2026-06-01T00:00:00") == datetime(2026, 6, 1, tzinfo=timezone.utc)
            assert parse_time(1780272000) == datetime(2026, 6, 1, tzinfo=timezone.utc)
            assert one_offer(expiration_date="2026-12-31T23:59:59")["expires_at"] == "2026-12-31T23:59:59Z"
        finally:
            monkeypatch.undo()
            time.tzset()

    def test_expiry_is_rendered_in_utc_with_z(self):
        offer = one_offer(expiration_date="2027-01-01T01:59:59+02:00")
        assert offer["expires_at"] == "2026-12-31T23:59:59Z"
        assert offer["expires_ts"] == datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()

    def test_a_garbled_expiry_drops_the_offer(self):
        # An offer we cannot prove unexpired is never shown.
        wallet, dropped = normalise_payload(payload(expiration_date="soon"))
        assert wallet["offers"] == [] and len(dropped) == 1

    def test_a_garbled_acquire_date_keeps_the_offer(self):
        offer = one_offer(acquire_date="yesterday")
        assert offer["issued_at"] != "yesterday"


class TestIdsAndCategories:
    def test_numeric_ids_become_strings(self):
        offer = one_offer(offer_id=42, user_offer_id=7, categories=[3, "x"])
        assert offer["offer_id"] == "42" and offer["user_offer_id"] == "7"
        assert offer["category_ids"] == ["3", "x"]

    def test_category_objects_and_the_category_ids_spelling(self):
        assert one_offer(categories=[{"id": "c1", "name": "A"}, {"id": 2}])["category_ids"] == ["c1", "2"]
        assert one_offer(categories=None, category_ids=["c9"])["category_ids"] == ["c9"]

    @pytest.mark.parametrize("junk", [True, None, 1.5, ["nested"], {"name": "no id"}])
    def test_junk_category_entries_are_skipped(self, junk):
        assert one_offer(categories=["c1", junk])["category_ids"] == ["c1"]

    def test_catalogues_follow_sort_order_then_sessionm_order(self):
        body = payload()
        body["offer_groups"] = [{"id": "b", "name": "B", "sort_order": 2}, {"id": "n", "name": "N"},
                                {"id": "a", "name": "A", "sort_order": 1}, {"id": "m", "name": "M"}]
        wallet, _ = normalise_payload(body)
        assert [g["id"] for g in wallet["groups"]] == ["a", "b", "n", "m"]

    def test_a_catalogue_entry_without_id_is_skipped(self):
        body = payload()
        body["offer_categories"] = [{"name": "nameless"}, {"id": "c", "name": "C"}]
        wallet, _ = normalise_payload(body)
        assert wallet["categories"] == [{"id": "c", "name": "C", "sort_order": None}]  # kept for view=sessionm


offer_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                         st.text(max_size=20), st.lists(st.integers(), max_size=3))


@given(st.dictionaries(st.sampled_from(["name", "description", "is_redeemable", "redeem_date",
                                        "expiration_date", "acquire_date", "categories", "media",
                                        "offer_id", "logo_uri"]), offer_values))
def test_any_offer_either_normalises_or_is_dropped_never_raises(changes):
    wallet, dropped = normalise_payload(payload(**changes))
    assert len(wallet["offers"]) + len(dropped) == 1
    for offer in wallet["offers"]:
        assert offer["redeemable"] in (True, False)
        assert offer["redeemed"] in (True, False)
        assert offer["expires_ts"] is None or math.isfinite(offer["expires_ts"])


def test_a_null_media_item_keeps_the_offer():
    offer = one_offer(logo_uri=None, media=[None, {"uri": "https://cdn.example.com/a.png", "content_type": 1}])
    assert offer["logo_url"] == "https://cdn.example.com/a.png"


class TestEnvelope:
    @pytest.mark.parametrize("body", [None, [], "ok", 1, {"user_offers": {"a": 1}}, {"user_offers": None},
                                      {"user_offers": "x"}, {"total_points": "many"}])
    def test_an_unusable_envelope_raises(self, body):
        with pytest.raises(ValidationError):
            normalise_payload(body)

    def test_dropped_offers_are_reported_by_index_with_the_reason(self):
        body = payload()
        good = body["user_offers"][0]
        body["user_offers"] = [good, "not an object", dict(good, expiration_date="never"), 7]
        wallet, dropped = normalise_payload(body)
        assert len(wallet["offers"]) == 1
        assert [index for index, _ in dropped] == [1, 2, 3]
        assert "expiration_date" in dropped[1][1]

    def test_missing_lists_are_empty(self):
        wallet, dropped = normalise_payload({"user_id": "u"})
        assert wallet["offers"] == [] and wallet["groups"] == [] and dropped == []
        assert wallet["total_points"] is None and wallet["available_points"] is None
        assert wallet["user_id"] == "u"

    def test_an_unreadable_user_object_keeps_the_wallet_without_flags(self):
        body = payload()
        body["user"] = {"opted_in": "perhaps", "activated": True}
        wallet, _ = normalise_payload(body)
        assert wallet["user"] == {"opted_in": None, "activated": None}
        assert len(wallet["offers"]) == 1

    def test_numeric_user_id_is_text(self):
        body = payload()
        body["user_id"] = 12345
        assert normalise_payload(body)[0]["user_id"] == "12345"


class TestTextFields:
    @pytest.mark.parametrize("value, expected", [("Coffee", "Coffee"), (12, "12"), (1.5, "1.5"), ("", "")])
    def test_text_accepts_strings_and_numbers(self, value, expected):
        assert one_offer(name=value)["title"] == expected

    @pytest.mark.parametrize("value", [True, ["a"], {"en": "Coffee"}])
    def test_text_refuses_other_types_dropping_the_offer(self, value):
        wallet, dropped = normalise_payload(payload(name=value))
        assert wallet["offers"] == [] and "name" in dropped[0][1]

    def test_garbled_start_date_does_not_drop_the_offer(self):
        offer = one_offer(start_date="the other day")
        assert offer["expires_at"] == "2026-12-31T23:59:59Z"

    @pytest.mark.parametrize("text", ["2026-12-31T23:59:59Z" + " " * 50, "9" * 65])
    def test_overlong_date_text_is_not_a_date(self, text):
        with pytest.raises(ValidationError):
            parse_time(text)

    def test_a_date_text_of_64_characters_is_still_read(self):
        text = "2026-12-31T23:59:59.000000+00:00".ljust(64)
        assert parse_time(text) == datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)

    def test_redeemed_is_any_non_empty_redeem_date(self):
        assert one_offer(redeem_date="")["redeemed"] is False
        assert one_offer(redeem_date=False)["redeemed"] is False
        assert one_offer(redeem_date="2026-01-01")["redeemed"] is True

    def test_logo_uri_wins_over_media(self):
        offer = one_offer(logo_uri="https://cdn.example.com/logo.png",
                          media=[{"uri": "https://cdn.example.com/m.png", "content_type": 1}])
        assert offer["logo_url"] == "https://cdn.example.com/logo.png"

    def test_an_empty_logo_uri_falls_back_to_media(self):
        offer = one_offer(logo_uri="", media=[{"uri": ""}, {"uri": "https://cdn.example.com/m.png", "content_type": 1}])
        assert offer["logo_url"] == "https://cdn.example.com/m.png"


class TestSurvivorsOfTheMutationRun:
    """Behaviours the first `make mutate` run of payload.py showed no test pinned down."""

    def test_a_date_text_of_65_characters_is_refused_even_if_it_would_parse(self):
        with pytest.raises(ValidationError):
            parse_time("2026-12-31T23:59:59Z".ljust(65))

    def test_parsed_times_are_utc_under_another_machine_zone(self, monkeypatch):
        import time

        monkeypatch.setenv("TZ", "Pacific/Auckland")
        time.tzset()
        try:
            for value in ("2026-12-31T23:59:59+02:00", "2026-12-31T23:59:59", 1798761599):
                assert parse_time(value).utcoffset().total_seconds() == 0, value
        finally:
            monkeypatch.undo()
            time.tzset()

    def test_two_to_the_53_is_a_float_below_it_an_int(self):
        body = payload()
        body["available_points"] = 2**53
        got = normalise_payload(body)[0]["available_points"]
        assert type(got) is float
        body["available_points"] = 2**53 - 1
        assert type(normalise_payload(body)[0]["available_points"]) is int

    @pytest.mark.parametrize("media, logo", [
        ([{"uri": "https://v.example.com/v.mp4", "content_type": 2}, {"uri": "https://i.example.com/i.png",
                                                                       "content_type": 1}], "https://i.example.com/i.png"),
        ([{"uri": "https://i.example.com/s.png", "content_type": "1"}], "https://i.example.com/s.png"),
        ([{"uri": "https://i.example.com/n.png"}], "https://i.example.com/n.png"),
        ([{"uri": "https://w.example.com/", "content_type": 5}], None),
        ([{"uri": "https://x.example.com/a", "content_type": "image"}, {"uri": "https://i.example.com/b.png",
                                                                         "content_type": 1}], "https://i.example.com/b.png"),
        ([{"uri": "https://x.example.com/t", "content_type": True}], None),
        ([{"content_type": 1}, {"uri": 7, "content_type": 1}, "junk"], None),
    ])
    def test_the_logo_is_the_first_image(self, media, logo):
        assert one_offer(logo_uri=None, media=media)["logo_url"] == logo

    def test_an_offer_with_few_fields_still_normalises(self):
        body = payload()
        body["user_offers"] = [{"offer_id": "o1", "expiration_date": "2026-12-31T23:59:59Z"}]
        wallet, dropped = normalise_payload(body)
        assert dropped == []
        (offer,) = wallet["offers"]
        assert offer["title"] is None and offer["logo_url"] is None and offer["redeemable"] is True

    def test_a_bad_group_entry_is_skipped(self):
        body = payload()
        body["offer_groups"] = ["junk", {"name": "no id"}, {"id": "g", "name": "G"}]
        wallet, _ = normalise_payload(body)
        assert wallet["groups"] == [{"id": "g", "name": "G", "sort_order": None}]

    def test_categories_follow_sort_order_too(self):
        body = payload()
        body["offer_categories"] = [{"id": "z", "name": "Z", "sort_order": 9}, {"id": "y", "name": "Y"},
                                    {"id": "x", "name": "X", "sort_order": 1}]
        wallet, _ = normalise_payload(body)
        assert [c["id"] for c in wallet["categories"]] == ["x", "z", "y"]

    def test_a_wallet_starts_untruncated(self):
        assert normalise_payload(payload())[0]["truncated"] is False


class TestWhatTheViewsRead:
    """Every field of a normalised offer, as both views read it (view=sessionm keeps SessionM's own)."""

    def test_an_offers_fields(self):
        offer = one_offer(end_date="2027-01-31T00:00:00+01:00",
                          media=[{"uri": "https://cdn.example.com/m.png", "content_type": 1}])
        assert offer == {
            "user_offer_id": "5f0c1a7e-3b1d-4c55-9a57-0d7f1c0f2a11",
            "offer_id": "1a2b3324-1da6-4e49-b921-afc386dabb60",
            "root_offer_id": "1a2b3324-1da6-4e49-b921-afc386dabb60",
            "logo_uri": "https://cdn.example.com/offers/coffee.png",
            "media": [{"uri": "https://cdn.example.com/m.png", "content_type": 1}],
            "start_date": "2026-11-01T00:00:00Z", "end_date": "2027-01-30T23:00:00Z",
            "offer_type": "manual_fulfillment", "title": "Free medium coffee",
            "description": "One medium coffee of your choice.",
            "terms": "Valid in participating stores. One per customer.",
            "logo_url": "https://cdn.example.com/offers/coffee.png", "pos_discount_id": "POS-1001",
            "group_id": "00000000-0000-0000-0000-000000000000",
            "category_ids": ["9a82f973-aae6-4e10-839b-7117a852cf9e"],
            "issued_at": "2026-11-02T09:30:00Z", "expires_at": "2026-12-31T23:59:59Z",
            "expires_ts": datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp(),
            "redeemed": False, "redeemable": True}

    @pytest.mark.parametrize("field, key", [("acquire_date", "issued_at"), ("start_date", "start_date"),
                                            ("end_date", "end_date")])
    def test_a_garbled_soft_date_is_null_and_keeps_the_offer(self, field, key):
        offer = one_offer(**{field: "the other day"})
        assert offer[key] is None and offer["expires_at"] == "2026-12-31T23:59:59Z"

    def test_media_keeps_objects_and_their_documented_keys_only(self):
        media = [{"uri": "https://cdn.example.com/h.png", "content_type": 1, "category_id": 7,
                  "category_name": "Hero", "alt": "secret", "width": None},
                 "junk", None, 3,
                 {"uri": True, "content_type": [1], "category_id": None, "category_name": {"en": "x"}},
                 {"uri": "https://cdn.example.com/v.mp4", "content_type": 2.0}]
        assert one_offer(media=media)["media"] == [
            {"uri": "https://cdn.example.com/h.png", "content_type": 1, "category_id": 7,
             "category_name": "Hero"},
            {}, {"uri": "https://cdn.example.com/v.mp4", "content_type": 2.0}]

    def test_a_true_content_type_is_skipped_not_the_end_of_the_search(self):
        media = [{"uri": "https://x.example.com/t", "content_type": True},
                 {"uri": "https://i.example.com/i.png", "content_type": 1}]
        assert one_offer(logo_uri=None, media=media)["logo_url"] == "https://i.example.com/i.png"


class TestDatesAndText:
    @pytest.mark.parametrize("text", ["2026-12-31Z", "2026-12-31z", "20261231Z"])
    def test_a_date_with_z_and_no_time_is_midnight_utc(self, text):
        assert parse_time(text) == datetime(2026, 12, 31, tzinfo=timezone.utc)

    def test_iso_is_utc_with_z_to_the_second_whatever_the_machine_zone(self, monkeypatch):
        import time

        monkeypatch.setenv("TZ", "Pacific/Auckland")
        time.tzset()
        try:
            plus_two = timezone(timedelta(hours=2))
            assert iso(datetime(2027, 1, 1, 1, 59, 59, 999999, tzinfo=plus_two)) == "2026-12-31T23:59:59Z"
            assert iso(datetime(2026, 6, 1, 9, 5, 7, tzinfo=timezone.utc)) == "2026-06-01T09:05:07Z"
            assert iso(None) is None
        finally:
            monkeypatch.undo()
            time.tzset()

    def test_a_non_object_payload_names_the_payload(self):
        # connect.normalised puts these messages in the 502's message
        with pytest.raises(ValidationError) as caught:
            normalise_payload(["not", "an", "object"])
        assert caught.value.messages == {"payload": ["must be an object"]}

    @pytest.mark.parametrize("value, read", [(None, None), ("", ""), ("x", "x"), (12, "12"), (1.5, "1.5")])
    def test_a_text_field_is_null_when_null_and_numbers_are_their_text(self, value, read):
        assert module.text(value) == read
        assert one_offer(name=value)["title"] == read

    @pytest.mark.parametrize("value", [True, False, [], {}, ["x"]])
    def test_a_text_field_of_another_type_drops_the_offer_naming_it(self, value):
        wallet, dropped = normalise_payload(payload(name=value))
        assert wallet["offers"] == [] and dropped == [(0, {"name": ["must be a string"]})]

    def test_a_cached_wallet_is_held_compactly(self):
        # thousands of cached wallets: each is held deflated (wallet/stores.py), not as Python objects
        from wallet_proxy.sandbox.connect import make_wallet
        from wallet_proxy.wallet.stores import Entry

        sent = make_wallet("user-1", "en-US", datetime.now(timezone.utc))
        wallet, _ = normalise_payload(json.loads(json.dumps(sent)))
        entry = Entry(wallet, 0.0)
        assert entry.size < 2048 and entry.size < len(json.dumps(sent)) / 2
        assert entry.wallet == wallet


def both_paths(body) -> list:
    """normalise_payload's answer (or refusal) and the old marshmallow schemas' (tests/payload_reference.py)."""
    outcomes = []
    for read in (normalise_payload, payload_reference.normalise_payload):
        try:
            outcomes.append(read(copy.deepcopy(body)))
        except ValidationError:
            outcomes.append("refused")
    return outcomes


class TestOneReader:
    """One reader for every form SessionM sends (issue #20 item 5): the plain form and the loose ones
    give what the old schemas gave; tests/test_payload_fast.py checks the same on generated payloads."""

    def test_the_product_reads_the_payload_without_marshmallow_schemas(self):
        source = Path(module.__file__).read_text()
        assert "Schema" not in source and "fields." not in source and "FAST" not in source
        assert not hasattr(module, "fast_offer"), "one reader, not a fast path beside a slow one"

    @pytest.mark.parametrize("value, expected", [
        (-2**53, float(-2**53)), (-2**53 + 1, -2**53 + 1), (2**53 - 1, 2**53 - 1), (2.0**53, 2.0**53),
        (1000.0, 1000), (12.5, 12.5), (-0.5, -0.5), (2**60, float(2**60)), (2**53, float(2**53)),
        (-2**53 - 1, float(-2**53 - 1)),
    ])
    def test_points_are_int_when_integral_below_2_to_the_53_on_both_paths(self, value, expected):
        # a Liquid template shows 1000, not 1000.0; past 2**53 an int would claim a precision it has not
        body = dict(payload(), available_points=value)
        for wallet, _ in both_paths(body):
            got = wallet["available_points"]
            assert got == expected and type(got) is type(expected), (value, got)

    @pytest.mark.parametrize("change, kept", [
        ({"media": "https://m/a.png"}, False),
        ({"media": {"uri": "https://m/a.png"}}, False),
        ({"categories": "c1"}, False),
        ({"category_ids": "c1", "categories": None}, False),
        ({"is_redeemable": "true", "name": "Coffee", "offer_id": 7}, True),
        ({"is_redeemable": 1, "terms": 1.5}, True),
    ])
    def test_odd_offer_forms_give_the_schemas_answer(self, change, kept):
        fast, reference = both_paths(payload(**change))
        assert fast == reference
        wallet, dropped = fast
        assert (len(wallet["offers"]), len(dropped)) == ((1, 0) if kept else (0, 1))
        if "name" in change:
            assert wallet["offers"][0]["title"] == "Coffee" and wallet["offers"][0]["offer_id"] == "7"

    @pytest.mark.parametrize("change, outcome", [
        ({"user_offers": [None]}, "refused"),
        ({"offer_groups": "g1"}, "refused"),
        ({"offer_groups": [None]}, "refused"),
        ({"offer_categories": [{"id": "c"}, None]}, "refused"),
        ({"offer_groups": [{"id": True, "name": "G"}, {"id": "g", "name": "G"}]}, ["g"]),
        ({"offer_groups": [{"id": "g", "name": True}, {"id": "h", "name": "H"}]}, ["h"]),
        ({"offer_groups": [{"id": "g", "name": "G", "sort_order": "2"}, {"id": "h", "sort_order": 1}]},
         ["h", "g"]),
    ])
    def test_odd_envelopes_and_catalogues_give_the_schemas_answer(self, change, outcome):
        fast, reference = both_paths(dict(payload(), **change))
        assert fast == reference
        assert fast == "refused" if outcome == "refused" else [g["id"] for g in fast[0]["groups"]] == outcome


@pytest.mark.parametrize("value, count", [
    (5, 5), (1, 1), ("5", 5), ("5.0", 5), (5.0, 5), (1200, 1200),  # a count, however it is spelled
    (0, 0), (-1, 0), (2.5, 0), ("2.5", 0), (True, 0), (None, 0), ("many", 0), ("NaN", 0), ([], 0),
    (2 ** 53, 0),  # past 2**53 the reader keeps a float: no count of offers comes near it
])
def test_record_count_reads_total_records_as_every_number_is_read(value, count):
    from wallet_proxy.wallet.payload import record_count

    assert record_count(value) == count and type(record_count(value)) is int
