"""Properties (hypothesis): whatever JSON SessionM sends, the answer is a valid view or a 5xx upstream error.

Never a 500: bad upstream data is SessionM's fault (502), not a crash of ours.
"""
from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime, timezone

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NOW, OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.errors import ApiError
from wallet_proxy.upstream import transport as upstream
from wallet_proxy.upstream.connect import interpret
from wallet_proxy.wallet.view import flatten

WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}
UPSTREAM_ANSWERS = {404: "user_not_found", 502: "upstream_error", 503: "upstream_unavailable"}

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
           | st.text(max_size=20))
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
dates = (st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1))
         .map(lambda d: d.isoformat() + st_choice_suffix(d)) | st.text(max_size=30) | any_json)


def st_choice_suffix(moment) -> str:
    return "Z" if moment.microsecond % 2 else ""


def maybe(strategy):
    """A key that may be absent, null, the right kind of value, or any JSON at all."""
    return st.one_of(strategy, st.none(), any_json)


ids = st.text(max_size=12) | st.integers(0, 10**12)
offer = st.fixed_dictionaries({}, optional={
    "user_offer_id": maybe(ids), "offer_id": maybe(ids), "root_offer_id": maybe(ids),
    "offer_group_id": maybe(ids), "offer_type": maybe(st.sampled_from(["manual_fulfillment", "pos"])),
    "name": maybe(st.text(max_size=20)), "description": maybe(st.text()), "terms": maybe(st.text()),
    "logo_uri": maybe(st.text()), "media": maybe(st.lists(st.fixed_dictionaries({}, optional={
        "uri": maybe(st.text()), "category_name": maybe(st.text())}), max_size=3)),
    "pos_discount_id": maybe(ids), "start_date": maybe(dates), "expiration_date": maybe(dates),
    "acquire_date": maybe(dates), "redeem_date": maybe(dates), "is_redeemable": maybe(st.booleans()),
    "categories": maybe(st.lists(ids | st.fixed_dictionaries({"id": ids}), max_size=3)),
    "category_ids": maybe(st.lists(ids, max_size=3)),
})
named = st.fixed_dictionaries({}, optional={"id": maybe(ids), "name": maybe(st.text(max_size=10)),
                                            "sort_order": maybe(st.integers() | st.text(max_size=4))})
payload = st.fixed_dictionaries({}, optional={
    "user": maybe(st.fixed_dictionaries({}, optional={"opted_in": maybe(st.booleans()),
                                                      "activated": maybe(st.booleans()),
                                                      "email": st.emails()})),
    "user_id": maybe(ids), "user_offers": maybe(st.lists(offer | any_json, max_size=5)),
    "offer_groups": maybe(st.lists(named | any_json, max_size=3)),
    "offer_categories": maybe(st.lists(named | any_json, max_size=3)),
    "total_points": maybe(st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)),
    "available_points": maybe(st.integers() | st.floats(allow_nan=False)),
    "total_records": maybe(st.integers()),
})
envelope = st.fixed_dictionaries({"status": st.sampled_from(["ok", "ok", "ok", "error"]) | any_json},
                                 optional={"payload": payload | any_json,
                                           "errors": maybe(st.fixed_dictionaries({"code": maybe(
                                               st.sampled_from(["user_not_found", "other"])),
                                               "message": maybe(st.text())}))})
bodies = envelope | envelope | any_json
ok_envelope = payload.map(lambda p: {"status": "ok", "payload": p})  # past the envelope checks
statuses = st.sampled_from([200] * 8 + [201, 204, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503])
queries = st.fixed_dictionaries({}, optional={
    "sort": st.sampled_from(["expires_at", "-expires_at", "title", "-title", "issued_at", "-issued_at"]),
    "limit": st.integers(1, 1000), "expiring_within_days": st.integers(0, 400),
    "type": st.text(min_size=1, max_size=5), "group": st.text(min_size=1, max_size=5),
    "category": st.text(min_size=1, max_size=5)})


def view_validator(app):
    """The WalletView JSON schema of the app's own /openapi.json."""
    spec = app.test_client().get("/openapi.json").get_json()
    return jsonschema.Draft202012Validator({"$ref": "#/components/schemas/WalletView",
                                            "components": spec["components"]})


@settings(max_examples=400, deadline=None)
@given(status=statuses, body=bodies, query=queries)
def test_interpret_gives_a_wallet_or_an_upstream_error(status, body, query):
    reply = upstream.Reply(status, {}, body, 0.01)
    try:
        wallet = interpret(reply)
    except ApiError as exc:
        assert exc.status in UPSTREAM_ANSWERS and exc.code == UPSTREAM_ANSWERS[exc.status]
        return
    now = datetime.fromtimestamp(NOW, tz=timezone.utc)
    view = flatten(wallet, now=now, user_id="u1", culture="en-US", fetched_at=NOW, stale=False, query=query)
    json.dumps(view, allow_nan=False)  # JSON-safe: no NaN, no datetime, no bytes
    for item in view["offers"]:  # never an expired or redeemed offer
        assert item["expires_in_days"] is None or item["expires_in_days"] >= 0
    assert view["offer_count"] == len(view["offers"])


def test_the_generators_reach_the_interesting_cases():
    """Guard against a strategy that only ever makes garbage: some examples must give offers."""
    found_offers = found_error = 0

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(body=payload)
    def probe(body):
        nonlocal found_offers, found_error
        try:
            wallet = interpret(upstream.Reply(200, {}, {"status": "ok", "payload": body}, 0.01))
            found_offers += bool(wallet["offers"])
        except ApiError:
            found_error += 1

    probe()
    assert found_offers >= 5 and found_error > 0, (found_offers, found_error)


_ids = itertools.count()


def test_over_http_any_answer_is_a_valid_view_or_an_upstream_error(sessionm, app_for):
    app = app_for(make_settings(sessionm.url, WALLET_PROXY_BREAKER_FAILURES="100000"))
    client = app.test_client()
    validator = view_validator(app)
    scripted = {}
    sessionm.on("POST", OFFERS_PATH, lambda request: scripted["reply"])
    seen = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(status=st.just(200) | statuses, body=ok_envelope | bodies | st.binary(max_size=40), query=queries)
    def check(status, body, query):
        scripted["reply"] = Reply(status, body)
        user = f"prop-{next(_ids)}"  # a new user each time: never answered from the cache
        response = client.get(f"/v1/wallets/{user}", query_string=query, headers=WALLET)
        seen.add(response.status_code)
        assert response.status_code in (200, *UPSTREAM_ANSWERS), response.get_data(as_text=True)
        answer = response.get_json()
        assert isinstance(answer, dict)
        if response.status_code == 200:
            validator.validate(answer)
            assert answer["ok"] is True and answer["user_id"] == user
        else:
            assert answer["ok"] is False
            assert answer["error"]["code"] == UPSTREAM_ANSWERS[response.status_code]

    check()
    assert {200, 502} <= seen


def test_any_core_answer_to_tags_is_documented_never_a_500(sessionm, app_for):
    """SessionM Core's answers to a tags call: a 200 only when Core said ok, else a documented error."""
    app = app_for(make_settings(sessionm.url, core_url=sessionm.url))
    client = app.test_client()
    tagger = {"Authorization": "Basic " + base64.b64encode(b"tagger:tg-secret").decode()}
    scripted = {}
    sessionm.on("POST", r"/tags$", lambda request: scripted["reply"])

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(status=statuses, body=any_json | st.binary(max_size=20) | st.fixed_dictionaries(
        {"status": st.sampled_from(["ok", "error"]) | any_json}, optional={"errors": any_json}))
    def check(status, body):
        scripted["reply"] = Reply(status, body)
        response = client.post(f"/v1/users/tag-{next(_ids)}/tags", json={"tags": ["vip"]}, headers=tagger)
        # 409: a counter tag (no ttl) Core answered a 5xx or INTERNAL_SERVER_ERROR on may have counted
        assert response.status_code in (200, 404, 409, 422, 429, 502, 503), response.get_data(as_text=True)
        answer = response.get_json()
        assert isinstance(answer, dict)
        if response.status_code == 409:
            assert answer["error"]["code"] == "outcome_unknown"
            assert status >= 500 or "INTERNAL_SERVER_ERROR" in response.get_data(as_text=True)
        if response.status_code == 200:
            assert answer["ok"] is True and answer["tags"] == ["vip"]
            assert 200 <= status < 300 and isinstance(body, dict) and body.get("status") != "error"
        else:
            assert answer["ok"] is False and answer["error"]["code"]

    check()


def test_any_braze_answer_to_a_trigger_is_documented_never_a_500(sessionm, app_for):
    """Braze's answers to a triggered send: 201 only on a 2xx, else Braze's 4xx or a documented 5xx."""
    app = app_for(make_settings(sessionm.url, braze_url=sessionm.url),
                  braze_options={"max_attempts": 1, "sleep": lambda seconds: None})
    client = app.test_client()
    sender = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}
    scripted = {}
    sessionm.on("POST", r"/trigger/send$", lambda request: scripted["reply"])

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(status=statuses | st.sampled_from([201, 400, 404]),
           body=any_json | st.binary(max_size=20) | st.fixed_dictionaries(
               {}, optional={"dispatch_id": any_json, "message": any_json, "errors": any_json}))
    def check(status, body):
        scripted["reply"] = Reply(status, body)
        response = client.post("/v1/braze/trigger", json={"campaign_id": "c1", "external_user_id": "u1"},
                               headers={**sender, "Idempotency-Key": f"k-{next(_ids)}"})
        code = response.status_code
        assert code == 201 or 400 <= code < 500 or code in (502, 503, 504), response.get_data(as_text=True)
        answer = response.get_json()
        assert isinstance(answer, dict)
        if code == 201:
            assert 200 <= status < 300
        else:
            assert answer["ok"] is False and answer["error"]["code"]

    check()
