"""SessionM Connect calls sent as one prepared POST with a new body (upstream/transport.JsonPost).

The prepared path must put on the wire what `Session.request(json=...)` did: the same method, path,
headers and JSON body, since SessionM is configured against them (see tests/test_connect_fidelity.py
for the fields themselves). It is taken only when the session reads nothing from the environment
per call; with a proxy configured the session's own handling stays. Real HTTP to a loopback fake.
"""
from __future__ import annotations

import pytest

from tests.conftest import OFFERS_PATH, fixture_json
from tests.fakes import FakeUpstream, Reply
from wallet_proxy.upstream import transport
from wallet_proxy.upstream.connect import ConnectClient

AUTH = "Basic Y29ubmVjdDpzZWNyZXQ="


@pytest.fixture
def fake():
    upstream = FakeUpstream()
    upstream.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"),
                                          {"Set-Cookie": "lb=node-7; Path=/"}))
    yield upstream
    upstream.close()


def sent(fake, trust_env: bool):
    session = transport.make_session(4)
    session.trust_env = trust_env
    client = ConnectClient(fake.url, AUTH, "retailer-1", session)
    assert client._post.usable() is (not trust_env)
    for user in ("u-1", "u-2"):
        assert client.fetch_raw(user, "fr-FR", 2.0).status == 200
    return fake.calls(OFFERS_PATH)


def wire(call):
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert int(headers["content-length"]) == len(call.body)
    # the JSON is the same; its bytes are compact now (orjson), so the length is not compared
    return call.method, call.path, call.json, {k: headers.get(k) for k in (
        "content-type", "accept", "authorization", "user-agent", "accept-encoding")}


def test_the_prepared_post_is_what_session_request_sent(fake):
    fast = [wire(c) for c in sent(fake, trust_env=False)]
    fake.reset()
    fake.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json")))
    slow = [wire(c) for c in sent(fake, trust_env=True)]
    assert fast == slow
    method, path, body, headers = fast[1]
    assert (method, path) == ("POST", OFFERS_PATH)
    assert body == {"retailer_id": "retailer-1", "user_id": "u-2", "skip": 0, "take": 1000,
                    "include_pending_extended_data": False, "culture": "fr-FR"}
    assert headers["authorization"] == AUTH and headers["content-type"] == "application/json"


def test_each_call_carries_its_own_body(fake):
    calls = sent(fake, trust_env=False)
    assert [c.json["user_id"] for c in calls] == ["u-1", "u-2"]


def test_no_cookie_from_one_users_answer_rides_on_the_next(fake):
    calls = sent(fake, trust_env=False)
    assert all("Cookie" not in c.headers and "cookie" not in c.headers for c in calls)


def test_timeouts_and_errors_map_as_on_the_session_path(fake):
    fake.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"), delay=1.0))
    client = ConnectClient(fake.url, AUTH, "retailer-1", transport.make_session(4))
    from wallet_proxy.errors import UpstreamTimeout

    with pytest.raises(UpstreamTimeout):
        client.fetch_raw("slow", "en-US", 0.2)
