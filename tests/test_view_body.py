"""The answers' bodies as pure functions: view=sessionm, on_error=empty, the JSON bytes and the 1 MB fit.

tests/test_sessionm_view.py drives these over HTTP; here they are pinned without a server (a fixed
clock, no dependence on the machine's time zone), so that `scripts/mutate.py view` judges them too.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields

from wallet_proxy.preview.liquid import Playground
from wallet_proxy.wallet import view
from wallet_proxy.wallet.payload import normalise_payload
from wallet_proxy.wallet.view import (SessionMOffer, SessionMPayload, SessionMView, WalletQuery, WalletView,
                                      empty_wallet, encode, fit, flatten, offers_of, sessionm_view)

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
DAY = 86400
ERROR = {"code": "upstream_unavailable", "message": "SessionM did not answer in time"}


def at(seconds_from_now: float) -> str:
    return (NOW + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%SZ")


def offer(oid: str, **changes) -> dict:
    """One entry of SessionM's `user_offers`, every key SessionM sends."""
    item = {"user_offer_id": f"uo-{oid}", "offer_id": f"o-{oid}", "root_offer_id": f"root-{oid}",
            "offer_group_id": "g1", "offer_type": "percent_discount", "name": f"Offer {oid}",
            "description": "Ten percent off", "terms": "One per visit", "logo_uri": None,
            "media": [{"uri": "https://cdn.example.com/i.png", "content_type": 1, "category_id": "m1",
                       "category_name": "Hero"}],
            "pos_discount_id": "POS-1", "start_date": at(-10 * DAY), "end_date": at(60 * DAY),
            "acquire_date": at(-DAY), "expiration_date": at(30 * DAY), "redeem_date": None,
            "is_redeemable": True, "categories": ["c1"]}
    item.update(changes)
    return item


def wallet(*offers, **top) -> dict:
    body = {"user": {"opted_in": True, "activated": False, "email": "ada@example.com"},
            "user_id": "sm-user-1", "user_offers": list(offers), "total_records": len(offers),
            "offer_groups": [{"id": "g1", "name": "Food", "sort_order": 2}, {"id": "g2", "name": "Drinks"}],
            "offer_categories": [{"id": "c1", "name": "Weekly", "sort_order": 1}],
            "total_points": 1000, "available_points": 250}
    body.update(top)
    return normalise_payload(body)[0]


def sessionm(w, now=NOW, keep=None, **query) -> dict:
    return sessionm_view(w, now=now, user_id="asked-id", query=query, keep=keep)


def flat(w, now=NOW, keep=None, **query) -> dict:
    return flatten(w, now=now, user_id="asked-id", culture="en-US", fetched_at=NOW.timestamp(), stale=False,
                   query=query, keep=keep)


def served(body) -> list:
    return [o["user_offer_id"] for o in offers_of(body)]


# The README's "after" block, a template written for SessionM's direct call, now through view=sessionm
# (tests/test_sessionm_view.py renders the README's own copy with brazejs, against a live service).
SEED_TEMPLATE = """\
{% connected_content https://wallet.example.com/v1/wallets/{{${user_id}}}?view=sessionm&culture=en-US \
:basic_auth wallet_proxy :save wallet :no_cache %}
You have {{wallet.payload.available_points}} points.
{% for offer in wallet.payload.user_offers %}
  {{offer.name}} (until {{offer.expiration_date | date: '%b %d'}})
{% endfor %}
"""


def render(source: str, body: dict) -> str:
    """Render as Braze would, with the answer's JSON bytes (not the dict) under `wallet`."""
    data = {"wallet": json.loads(encode(body)), "user_id": "u-1"}
    out = Playground(clock=NOW.timestamp).render(source, data)
    return "\n".join(line.strip() for line in out.output.splitlines() if line.strip())


class TestDeclaredFields:
    def test_a_nullable_field_is_always_present_and_may_be_null(self):
        schema = Schema.from_dict({"ends": view._n(fields.String, metadata={"format": "date-time"})})()
        assert schema.validate({"ends": None}) == {}
        assert schema.validate({"ends": "2026-12-31T23:59:59Z"}) == {}
        assert "ends" in schema.validate({}), "absent is not the same as null: the key must be there"
        assert schema.fields["ends"].metadata == {"format": "date-time"}, "OpenAPI reads the metadata"

    @pytest.mark.parametrize("given, loaded", [("pt_br", "pt-BR"), ("FR", "fr"),
                                               (" sr-latn-rs ", "sr-Latn-RS"), ("", "en-US")])
    def test_the_culture_query_is_canonical(self, given, loaded):
        assert WalletQuery().load({"culture": given})["culture"] == loaded

    def test_a_bad_culture_is_a_field_error_naming_the_rule(self):
        with pytest.raises(ValidationError) as caught:
            WalletQuery().load({"culture": "fr--FR"})
        assert caught.value.messages == {"culture": ["must be a BCP 47 language tag such as fr or fr-FR"]}


class TestSessionMView:
    def test_sessionms_own_keys_and_values_for_a_live_offer(self):
        body = sessionm(wallet(offer("a", logo_uri="https://cdn.example.com/logo.png")))
        assert body["status"] == "ok" and list(body) == ["status", "payload"]
        payload = body["payload"]
        assert list(payload) == list(SessionMPayload().fields)
        assert payload == {
            "user": {"opted_in": True, "activated": False},  # no personal data
            "user_id": "sm-user-1",
            "user_offers": [{
                "user_offer_id": "uo-a", "offer_id": "o-a", "root_offer_id": "root-a", "offer_group_id": "g1",
                "offer_type": "percent_discount", "name": "Offer a", "description": "Ten percent off",
                "terms": "One per visit", "logo_uri": "https://cdn.example.com/logo.png",
                "media": [{"uri": "https://cdn.example.com/i.png", "content_type": 1, "category_id": "m1",
                           "category_name": "Hero"}],
                "pos_discount_id": "POS-1", "start_date": at(-10 * DAY), "end_date": at(60 * DAY),
                "acquire_date": at(-DAY), "expiration_date": at(30 * DAY), "redeem_date": None,
                "is_redeemable": True, "categories": ["c1"]}],
            "total_records": 1,
            "offer_groups": [{"id": "g1", "name": "Food", "sort_order": 2},
                             {"id": "g2", "name": "Drinks", "sort_order": None}],
            "offer_categories": [{"id": "c1", "name": "Weekly", "sort_order": 1}],
            "total_points": 1000, "available_points": 250}
        assert list(payload["user_offers"][0]) == list(SessionMOffer().fields)
        assert SessionMView().validate(body) == {}

    def test_dates_are_utc_whatever_form_sessionm_used(self):
        (item,) = sessionm(wallet(offer("a", expiration_date="2026-12-31T23:59:59+02:00",
                                        acquire_date=1798761599, start_date="2026-11-01 00:00:00")))[
            "payload"]["user_offers"]
        assert (item["expiration_date"], item["acquire_date"], item["start_date"]) == \
            ("2026-12-31T21:59:59Z", "2026-12-31T23:59:59Z", "2026-11-01T00:00:00Z")

    def test_expired_and_redeemed_offers_never_show(self):
        w = wallet(offer("live"), offer("expired-now", expiration_date=at(0)),
                   offer("expired", expiration_date=at(-DAY)), offer("redeemed", redeem_date=at(-60)),
                   offer("open-ended", expiration_date=None))
        payload = sessionm(w)["payload"]
        assert served(sessionm(w)) == ["uo-live", "uo-open-ended"] and payload["total_records"] == 2
        assert all(o["redeem_date"] is None for o in payload["user_offers"])
        later = sessionm(w, now=NOW + timedelta(days=31))
        assert served(later) == ["uo-open-ended"], "checked at serve time, not when fetched"

    def test_not_redeemable_offers_are_flagged_not_hidden(self):
        (item,) = sessionm(wallet(offer("a", is_redeemable=False)))["payload"]["user_offers"]
        assert item["is_redeemable"] is False

    def test_the_query_filters_sorts_and_limits_user_offers(self):
        w = wallet(offer("a", offer_type="x", name="banana"), offer("b", offer_group_id="g2", name="apple"),
                   offer("c", name="Cherry", expiration_date=at(2 * DAY)))
        assert served(sessionm(w, type="percent_discount")) == ["uo-b", "uo-c"]
        assert served(sessionm(w, group="Drinks")) == ["uo-b"]
        assert served(sessionm(w, sort="title")) == ["uo-b", "uo-a", "uo-c"]
        assert served(sessionm(w, expiring_within_days=2)) == ["uo-c"]
        body = sessionm(w, limit=2)
        assert served(body) == ["uo-a", "uo-b"] and body["payload"]["total_records"] == 2

    def test_keep_cuts_user_offers_and_total_records_still_counts_every_offer_served(self):
        w = wallet(offer("a"), offer("b"), offer("c"))
        for keep, ids in ((None, ["uo-a", "uo-b", "uo-c"]), (3, ["uo-a", "uo-b", "uo-c"]),
                          (2, ["uo-a", "uo-b"]), (0, [])):
            body = sessionm(w, keep=keep)
            assert served(body) == ids and body["payload"]["total_records"] == 3, keep

    def test_the_asked_user_id_stands_in_when_sessionm_sends_none(self):
        assert sessionm(wallet(offer("a"), user_id=None))["payload"]["user_id"] == "asked-id"

    def test_user_without_flags_is_two_nulls(self):
        body = sessionm(wallet(offer("a"), user=None))
        assert body["payload"]["user"] == {"opted_in": None, "activated": None}

    def test_a_wallet_cached_before_view_sessionm_still_answers_the_declared_shape(self):
        # Redis keeps wallets as JSON across a deploy: those cached by the release before view=sessionm
        # lack the keys that only this view reads.
        w = json.loads(json.dumps(wallet(offer("a"))))
        for item in w["offers"]:
            for key in ("root_offer_id", "logo_uri", "media", "start_date", "end_date"):
                del item[key]
        for group in w["groups"]:
            del group["sort_order"]
        body = sessionm(w)
        (item,) = body["payload"]["user_offers"]
        assert item["media"] == [] and item["root_offer_id"] is None and item["logo_uri"] is None
        assert item["start_date"] is None and item["end_date"] is None
        assert [g["sort_order"] for g in body["payload"]["offer_groups"]] == [None, None]
        assert SessionMView().validate(body) == {}

    def test_the_answer_shares_no_list_with_the_cached_wallet(self):
        w = wallet(offer("a"))
        (item,) = sessionm(w)["payload"]["user_offers"]
        item["categories"].append("c9")
        assert w["offers"][0]["category_ids"] == ["c1"]

    def test_the_seeds_template_renders_the_points_and_the_live_offers(self):
        w = wallet(offer("a", name="Free coffee", expiration_date="2026-12-31T23:59:59Z"),
                   offer("b", name="Old muffin", expiration_date=at(-1)),
                   offer("c", name="Used tea", redeem_date=at(-60)))
        assert render(SEED_TEMPLATE, sessionm(w)) == \
            "You have 250 points.\nFree coffee (until Dec 31)"


offer_specs = st.lists(st.fixed_dictionaries({
    "left": st.integers(min_value=-3 * DAY, max_value=40 * DAY) | st.none(),
    "redeemed": st.booleans(),
    "group": st.sampled_from(["g1", "g2", "g9", None]),
    "type": st.sampled_from(["percent_discount", "manual_fulfillment"]),
    "categories": st.lists(st.sampled_from(["c1", "c2"]), max_size=2, unique=True),
    "name": st.sampled_from(["apple", "Banana", "cherry", None]),
}), max_size=8)
queries = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["percent_discount", "manual_fulfillment"]),
    "group": st.sampled_from(["g1", "Drinks", "g9"]),
    "category": st.sampled_from(["c1", "Weekly", "c2"]),
    "expiring_within_days": st.integers(min_value=0, max_value=40),
    "sort": st.sampled_from(["expires_at", "-expires_at", "title", "-title", "issued_at", "-issued_at"]),
    "limit": st.integers(min_value=1, max_value=8),
})


@settings(max_examples=80, deadline=None)
@given(offer_specs, queries)
def test_view_sessionm_serves_what_the_flat_view_serves(specs, query):
    """Same offers, same order, same counts: only the shape differs (any wallet, any query)."""
    w = wallet(*(offer(str(i), expiration_date=None if s["left"] is None else at(s["left"]),
                       redeem_date=at(-60) if s["redeemed"] else None, offer_group_id=s["group"],
                       offer_type=s["type"], categories=s["categories"], name=s["name"],
                       acquire_date=at(-i * 3600)) for i, s in enumerate(specs)))
    body, reference = sessionm(w, **query), flat(w, **query)
    assert served(body) == served(reference)
    assert body["payload"]["total_records"] == reference["offer_count"]
    for item, same in zip(body["payload"]["user_offers"], reference["offers"]):
        assert (item["name"], item["offer_group_id"], item["expiration_date"], item["acquire_date"]) == \
            (same["title"], same["group_id"], same["expires_at"], same["issued_at"])
    for i, s in enumerate(specs):
        if f"uo-{i}" in served(body):
            assert not s["redeemed"] and (s["left"] is None or s["left"] > 0)
    assert SessionMView().validate(body) == {}


class TestFlatShape:
    def test_offer_keys_and_values_are_the_declared_ones(self):
        body = flat(wallet(offer("a")))
        (item,) = body["offers"]
        assert list(item) == list(view.OfferView().fields)
        assert item["issued_at"] == at(-DAY) and item["expires_at"] == at(30 * DAY)
        assert WalletView().validate(body) == {}

    def test_a_template_reads_when_the_offer_was_issued(self):
        source = "{% for o in wallet.offers %}{{o.title}} since {{o.issued_at | date: '%b %d'}}{% endfor %}"
        assert render(source, flat(wallet(offer("a", acquire_date="2026-11-02T09:30:00Z")))) == \
            "Offer a since Nov 02"


class TestEmptyWallet:
    def test_view_sessionm_answers_sessionms_error_shape_with_an_empty_payload(self):
        body = empty_wallet(user_id="u-1", culture="fr-FR", error=ERROR, view="sessionm")
        assert body == {"status": "error", "errors": ERROR, "payload": {
            "user": {"opted_in": None, "activated": None}, "user_id": "u-1", "user_offers": [],
            "total_records": 0, "offer_groups": [], "offer_categories": [], "total_points": 0,
            "available_points": 0}}
        assert list(body["payload"]) == list(SessionMPayload().fields)
        assert SessionMView().validate(body) == {}

    def test_the_seeds_template_renders_zero_points_and_no_offers(self):
        body = empty_wallet(user_id="u-1", culture="en-US", error=ERROR, view="sessionm")
        assert render(SEED_TEMPLATE, body) == "You have 0 points."

    def test_flat_is_the_default(self):
        assert empty_wallet(user_id="u-1", culture="en-US", error=ERROR) == \
            empty_wallet(user_id="u-1", culture="en-US", error=ERROR, view="flat")
        assert empty_wallet(user_id="u-1", culture="en-US", error=ERROR)["ok"] is False


class TestEncode:
    def test_compact_utf8_not_escaped(self):
        data = encode({"title": "Café ☕", "offers": [1, 2]})
        assert data == '{"title":"Café ☕","offers":[1,2]}'.encode("utf-8")
        assert len(data) == 36, "Braze's 1 MB counts these bytes"

    def test_offers_of_either_view(self):
        w = wallet(offer("a"))
        body, other = flat(w), sessionm(w)
        assert offers_of(body) is body["offers"] and offers_of(other) is other["payload"]["user_offers"]


def plain(count: int, size: int = 100):
    """A build whose length is exactly known: {"offers":[...]} with `count` offers of `size` bytes."""
    offers = [{"id": f"{i:03d}", "pad": "x" * (size - 21)} for i in range(count)]
    assert all(len(encode(o)) == size for o in offers)
    calls = []

    def build(keep=None):
        calls.append(keep)
        if len(calls) > count + 3:
            raise AssertionError(f"fit does not converge: {calls}")
        return {"offers": offers if keep is None else offers[:keep]}
    return build, calls


def kept(data: bytes) -> int:
    return len(json.loads(data)["offers"])


class TestFit:
    """Braze drops a Connected Content answer over 1 MB: `fit` leaves out the last offers instead."""

    def test_a_body_that_fits_is_built_once_and_sent_whole(self):
        whole = encode(plain(5)[0]())
        build, calls = plain(5)
        assert fit(build, limit=len(whole)) == whole and calls == [None]

    def test_the_estimate_leaves_64_bytes_spare_and_no_more(self):
        # Real bodies shrink a few bytes when cut (`truncated: true`, smaller counts); the estimate keeps
        # 64 bytes spare for that, so the body it builds fits the first time. It never keeps more spare:
        # every offer that fits with 64 bytes to spare is served.
        build, _ = plain(10)
        size = [len(encode(build(keep=k))) for k in range(11)]
        for limit in range(size[1] - 70, size[9] + 70):
            build, calls = plain(10)
            data = fit(build, limit=limit)
            expected = max([k for k in range(11) if size[k] + 64 <= limit], default=0)
            assert kept(data) == expected, limit
            assert calls == [None, expected], "one build to measure, one to send"

    def test_a_body_that_grows_when_cut_is_cut_one_offer_at_a_time_until_it_fits(self):
        # fit's contract with `build` is only "at most n offers": if a cut body carries more than the
        # estimate allows for, fit still never answers over the limit, and keeps the most that fit.
        def growing(count, notice):
            inner, calls = plain(count)

            def build(keep=None):
                body = inner(keep)
                if keep is not None and keep < count:
                    body["notice"] = "n" * notice
                return body
            return build, calls

        build, _ = growing(10, 250)
        size = [len(encode(build(keep=k))) for k in range(11)]
        assert size[10] > size[7], "the whole body does not fit any limit of the sweep"
        for limit in range(size[0], size[7] + 2):
            build, calls = growing(10, 250)
            data = fit(build, limit=limit)
            assert len(data) <= limit, limit
            assert kept(data) == max(k for k in range(11) if size[k] <= limit), limit
            assert calls[1:] == list(range(calls[1], kept(data) - 1, -1)), "down from the estimate, 1 by 1"

    def test_when_not_even_the_empty_body_fits_it_is_sent_empty_rather_than_never(self):
        build, calls = plain(10)
        assert fit(build, limit=5) == b'{"offers":[]}' and calls[-1] == 0

    @pytest.mark.parametrize("name", ["flat", "sessionm"])
    def test_real_views_are_cut_under_the_limit_and_say_so(self, name):
        w = wallet(*(offer(str(i), description="d" * 400) for i in range(12)))

        def build(keep=None):
            return view.VIEWS[name](w, now=NOW, user_id="u", culture="en-US", fetched_at=0, stale=False,
                                    keep=keep)
        whole = encode(build())
        for limit in (len(whole) - 1, len(whole) // 2, 2000, 10):
            data = fit(build, limit=limit)
            body = json.loads(data)
            count = len(offers_of(body))
            assert count < 12 and served(body) == served(build())[:count], "the first offers, in order"
            assert len(data) <= limit or count == 0
            if name == "flat":
                assert body["truncated"] is True and body["offer_count"] == count
            else:
                assert body["payload"]["total_records"] == 12, "more than user_offers says some were left out"
            # no offer left out that fitted with 64 bytes to spare (less the few a cut body loses:
            # `true` for `false`, shorter counts)
            assert len(encode(build(keep=count + 1))) > limit - 64 - 8
