"""The drain window (wallet_proxy/web/drain.py): the longest request, and what makes it a bound.

The Procfile's drain and the manifests' grace periods are checked against it in test_gunicorn.py
(a real SIGTERM mid-send) and test_k8s.py / test_compose.py; here, the formula itself, and the bound
it relies on for a send of many chunks.
"""
from __future__ import annotations

import importlib.util
import time

from tests.conftest import ROOT, make_settings
from tests.fakes import Reply
from wallet_proxy.upstream.braze import BrazeClient
from wallet_proxy.web.worker import HEAD_TIMEOUT
from wallet_proxy.web.drain import ANSWER_WRITE_TIMEOUT, BODY_READ_TIMEOUT, DRAIN_MARGIN, drain_window


def test_the_window_is_the_slowest_route_plus_body_read_and_answer_write():
    window = drain_window()
    # defaults: the trigger route's Braze budget (20 s) + one attempt (2 s connect + 10 s read)
    assert window.routes["trigger"] == 32.0 and max(window.routes.values()) == 32.0
    assert window.longest_request == BODY_READ_TIMEOUT + 32.0 + ANSWER_WRITE_TIMEOUT
    assert window.graceful_timeout == 55 and window.graceful_timeout >= window.longest_request + DRAIN_MARGIN
    assert window.pod_grace(5) == 65


def test_the_window_follows_the_settings():
    slow = drain_window(make_settings(WALLET_PROXY_DEADLINE="30"))
    assert slow.routes["wallet"] == 30.0 and slow.routes["sync"] == 30.0 + 5.0 + 12.0
    assert slow.graceful_timeout == drain_window().graceful_timeout + 15  # sync is now the slowest
    assert drain_window(relay_budget=40).routes["relay"] == 52.0
    # the worker's body and write bounds (WALLET_PROXY_BODY_TIMEOUT / _WRITE_TIMEOUT) are the window's ends
    longer = drain_window(make_settings(WALLET_PROXY_BODY_TIMEOUT="30", WALLET_PROXY_WRITE_TIMEOUT="20"))
    assert longer.longest_request == drain_window().longest_request + 20 + 10


def test_the_window_uses_the_bounds_the_routes_run_with(braze):
    """drain.py copies the bounds (it is read in gunicorn's master, before gevent patches ssl): each
    copy equals what the service builds."""
    import requests

    from wallet_proxy.services import _build_trigger, build_attribute_sync
    from wallet_proxy.sync import routes as sync_routes
    from wallet_proxy.web import drain

    settings = make_settings(braze_url=braze.url)
    client, engine = _build_trigger(settings, requests.Session(), None, time.time, {})
    assert (drain.BRAZE_CONNECT_TIMEOUT, drain.BRAZE_READ_TIMEOUT, drain.BRAZE_RETRY_BUDGET) == (
        client.connect_timeout, client.timeout, client.retry_budget)
    assert drain.IDEMPOTENCY_WAIT == engine.store.wait_timeout
    track = build_attribute_sync(settings, requests.Session(), None, None, time.time, max_attempts=3).braze
    assert (drain.TRACK_CONNECT_TIMEOUT, drain.TRACK_READ_TIMEOUT) == (track.connect_timeout, track.timeout)
    assert drain.SYNC_BRAZE_SECONDS == sync_routes.BRAZE_SECONDS
    assert drain.BODY_READ_TIMEOUT >= HEAD_TIMEOUT  # "the same kind of limit as the head's"


def test_gunicorn_conf_drains_for_the_window():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert conf.graceful_timeout == drain_window().graceful_timeout


def test_a_send_of_many_chunks_stops_calling_braze_when_its_budget_is_spent(braze, app_for):
    """The window counts one Braze attempt past the budget; a chunk whose turn comes after the budget
    is spent is not attempted (503 for it, a repeat with the key sends it), else 50 slow chunks would
    hold the request for minutes and a rollout would cut it. Each call is 0.2 s; the budget 0.3 s: the
    second chunk starts inside the budget (and gets its minimum attempt time), the third does not."""
    braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "d-1", "message": "success"},
                                                      delay=0.2))
    app = app_for(make_settings(braze_url=braze.url), braze_options={"retry_budget": 0.3})
    body = {"campaign_id": "c-1", "recipients": [{"external_user_id": f"u{i}"} for i in range(120)]}
    started = time.monotonic()
    answer = app.test_client().post("/v1/braze/trigger", json=body, headers={"Authorization": "Bearer secret"})
    assert time.monotonic() - started < 1.5
    assert len(braze.calls("/campaigns/trigger/send")) == 2  # of 3 chunks of 50
    assert answer.status_code == 503 and answer.headers["Retry-After"], answer.json
    chunks = answer.json["error"]["details"]["chunks"]
    assert [c.get("dispatch_id") for c in chunks[:2]] == ["d-1", "d-1"]
    assert chunks[2]["error"]["code"] == "upstream_unavailable"


def test_a_send_past_its_budget_makes_no_call(braze):
    import requests

    client = BrazeClient(braze.url, "key", requests.Session())
    try:
        client.send("campaign", {"campaign_id": "c"}, deadline=time.monotonic() - 0.01)
    except Exception as exc:  # noqa: BLE001 - the type is checked below
        assert type(exc).__name__ == "UpstreamUnavailable" and exc.status == 503
    else:
        raise AssertionError("a call was made past its budget")
    assert braze.calls() == []
