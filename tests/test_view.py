"""The pure view: normalised wallet -> flattened JSON, with serve-time expiry."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from tests.conftest import fixture_json
from wallet_proxy.ids import normalise_culture, valid_user_id
from wallet_proxy.wallet.payload import normalise_payload, parse_time
from wallet_proxy.wallet.view import flatten

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


def wallet(**changes):
    payload = fixture_json("get_user_offers.ok.json")["payload"]
    payload["user_offers"][0].update(changes)
    return normalise_payload(payload)[0]


def view(w, now=NOW, **query):
    return flatten(w, now=now, user_id="u", culture="en-US", fetched_at=NOW.timestamp(), stale=False,
                   query=query)


@pytest.mark.parametrize("value, expected", [
    ("2026-12-31T23:59:59Z", "2026-12-31T23:59:59+00:00"), ("2026-12-31T23:59:59", "2026-12-31T23:59:59+00:00"),
    ("2026-12-31 23:59:59", "2026-12-31T23:59:59+00:00"), ("2026-12-31T23:59:59+02:00", "2026-12-31T21:59:59+00:00"),
    ("2026-12-31T23:59:59.123Z", "2026-12-31T23:59:59.123000+00:00"), (1798761599, "2026-12-31T23:59:59+00:00"),
    (1798761599000, "2026-12-31T23:59:59+00:00"), (None, None), ("", None),
])
def test_dates_are_read_in_every_form_sessionm_uses(value, expected):
    parsed = parse_time(value)
    assert (parsed.isoformat() if parsed else None) == expected


@pytest.mark.parametrize("value", ["tomorrow", True, {"a": 1}, "9" * 70, 10**30])
def test_garbage_dates_are_refused(value):
    with pytest.raises(ValidationError):
        parse_time(value)


def test_expires_in_days_rounds_down():
    w = wallet(expiration_date="2026-11-30T09:59:59Z")
    assert view(w)["offers"][0]["expires_in_days"] == 1
    assert view(w, now=NOW + timedelta(days=1, seconds=1))["offers"][0]["expires_in_days"] == 0


def test_expiry_is_checked_at_serve_time():
    w = wallet(expiration_date="2026-11-28T10:00:01Z")
    assert view(w)["offer_count"] == 1
    assert view(w, now=NOW + timedelta(seconds=1))["offer_count"] == 0


@pytest.mark.parametrize("redeem_date", ["2026-11-01T00:00:00Z", "garbled", 12345])
def test_any_redeem_date_hides_the_offer(redeem_date):
    assert view(wallet(redeem_date=redeem_date))["offers"] == []


def test_not_redeemable_offers_are_flagged_not_hidden():
    assert view(wallet(is_redeemable="false"))["offers"][0]["redeemable"] is False


def test_offer_that_is_not_an_object_is_dropped_and_reported():
    payload = fixture_json("get_user_offers.ok.json")["payload"]
    payload["user_offers"].append("junk")
    w, dropped = normalise_payload(payload)
    assert len(w["offers"]) == 1 and dropped[0][0] == 1


@pytest.mark.parametrize("payload", [None, [], "x", {"user_offers": "x"}, {"user_offers": None}])
def test_unusable_envelopes_raise(payload):
    with pytest.raises(ValidationError):
        normalise_payload(payload)


def test_numeric_ids_and_string_points_are_accepted():
    payload = {"user_offers": [{"user_offer_id": 7, "name": "x"}], "available_points": "12.0",
               "total_points": 1.5}
    w = normalise_payload(payload)[0]
    out = view(w)
    assert out["offers"][0]["user_offer_id"] == "7"
    assert (out["available_points"], out["total_points"]) == (12, 1.5)


def test_user_keeps_no_personal_data():
    payload = fixture_json("get_user_offers.ok.json")["payload"]
    payload["user"].update(email="a@b.c", first_name="Ann", opted_in=True)
    assert view(normalise_payload(payload)[0])["user"] == {"opted_in": True, "activated": False}


@pytest.mark.parametrize("user_id, ok", [("a", True), ("x" * 128, True), ("x" * 129, False), ("", False),
                                         ("...", False), ("a.b", True), ("a/b", False), ("é", False),
                                         ("a\nb", False), ("a b", False), ("a@b:c+d_e-f", True)])
def test_user_id_alphabet(user_id, ok):
    assert valid_user_id(user_id) is ok


@pytest.mark.parametrize("value, out", [(None, "en-US"), ("", "en-US"), ("  ", "en-US"), ("FR", "fr"),
                                        ("pt-br", "pt-BR"), ("es-419", "es-419"), ("sr-latn-rs", "sr-Latn-RS")])
def test_culture(value, out):
    assert normalise_culture(value) == out


@pytest.mark.parametrize("value", ["f", "english", "fr-", "fr--FR", "fr-FR;DROP", "12"])
def test_bad_culture(value):
    with pytest.raises(ValueError):
        normalise_culture(value)


@pytest.mark.parametrize("value", ["user-1\n", "u\r\n", "a\n"])
def test_a_trailing_newline_is_not_a_valid_id(value):
    # `$` would match before a final newline: the alphabet check must anchor at the very end
    assert valid_user_id(value) is False
