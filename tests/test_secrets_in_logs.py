"""Run representative requests across every route with secrets configured; grep all log output for them.

Two passes: at INFO with the redaction filter switched off (the code itself must never log a secret),
then at DEBUG with it on (third-party debug lines, e.g. urllib3 printing Core's URL, which holds the
API key, must come out redacted).
"""
from __future__ import annotations

import base64
import logging

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, free_port, make_settings
from tests.fakes import Reply
from wallet_proxy.web import logs
from wallet_proxy.web.auth import sign

CONNECT_AUTH = "Q29ubmVjdFVzZXI6Y29ubmVjdC1wYXNzLTkxMw=="
SIGNING_KEY = "signing-key-5f1e2d"
REDIS_PASSWORD = "redis-pass-77aa"
CLIENTS = {"braze": ("braze-secret-1a2b", "wallet"), "tagger": ("tagger-secret-3c4d", "tags"),
           "sender": ("sender-secret-5e6f", "trigger"), "ops": ("ops-secret-7a8b", "admin")}


def basic(name: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{CLIENTS[name][0]}".encode()).decode()}


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {CLIENTS[name][0]}"}


@pytest.fixture
def settings(sessionm, braze):
    clients = ",".join(f"{name}:{secret}:{scope}" for name, (secret, scope) in CLIENTS.items())
    values = make_settings(sessionm.url, core_url=sessionm.url, braze_url=braze.url,
                           WALLET_PROXY_CLIENTS=clients, WALLET_PROXY_SIGNING_KEY=SIGNING_KEY,
                           WALLET_PROXY_REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0")
    return values.with_overrides(connect_auth=CONNECT_AUTH, core_api_key="core-api-key-9d8c",
                                 core_api_secret="core-api-secret-6b5a", braze_api_key="braze-rest-key-4e3f")


def every_secret(settings) -> set[str]:
    """Each configured secret in every form it travels: raw, Basic, Bearer."""
    found = {CONNECT_AUTH, "Basic " + CONNECT_AUTH, SIGNING_KEY, REDIS_PASSWORD, settings.core_api_key,
             settings.core_api_secret, settings.braze_api_key,
             base64.b64encode(f"{settings.core_api_key}:{settings.core_api_secret}".encode()).decode()}
    for name, (secret, _) in CLIENTS.items():
        found |= {secret, basic(name)["Authorization"].split()[1]}
    found |= set(logs.secret_values(settings))
    return found


def exercise(app, sessionm, braze) -> int:
    """Representative traffic on every route, good and bad, with upstream faults; returns request count."""
    client = app.test_client()
    app.extensions["wallet_proxy"].store.fallback.forget("u1")  # a second pass calls SessionM again
    sessionm.reset()
    sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json")))
    sessionm.on("POST", r"/tags$", Reply(200, {"status": "ok"}))
    braze.reset()
    braze.on("POST", r"/trigger/send$", Reply(201, {"dispatch_id": "d-1", "message": "success"}))
    sig = lambda user: sign(SIGNING_KEY, user)  # noqa: E731
    calls = [
        ("GET", f"/v1/wallets/u1?sig={sig('u1')}", basic("braze"), None),
        ("GET", f"/v1/wallets/u1?sig={sig('u1')}&culture=fr", bearer("braze"), None),
        ("GET", "/v1/wallets/u1?sig=wrong", basic("braze"), None),
        ("GET", f"/v1/wallets/u1?sig={sig('u1')}", {"Authorization": "Bearer braze-secret-1a2X"}, None),
        ("GET", f"/v1/wallets/u1?sig={sig('u1')}", basic("tagger"), None),
        ("DELETE", "/v1/wallets/u1", basic("ops"), None),
        ("POST", "/v1/users/u1/tags", basic("tagger"), {"tags": ["vip"], "ttl": 60}),
        ("POST", "/v1/users/u1/tags", basic("tagger"), {"tags": []}),
        ("POST", "/v1/braze/trigger", bearer("sender"), {"campaign_id": "c1", "external_user_id": "u1",
                                                         "Offer Title": "Coffee"}),
        ("POST", "/campaigns/trigger/send", bearer("sender"), {"campaign_id": "c1", "recipients": [
            {"external_user_id": "u1", "trigger_properties": {"x": 1}}]}),
        ("POST", "/canvas/trigger/send", bearer("sender"), {"canvas_id": "v1", "broadcast": True}),
        ("POST", "/v1/braze/trigger", bearer("sender"), {"campaign_id": "c1"}),
        ("GET", "/preview?user_id=u1", basic("ops"), None),
        ("GET", "/preview/api/wallet?user_id=u1", basic("ops"), None),
        ("GET", "/metrics", basic("ops"), None),
        ("GET", "/readyz", {}, None),
        ("GET", "/healthz", {}, None),
        ("GET", "/openapi.json", {}, None),
        ("GET", "/", {}, None),
        ("GET", "/nowhere", basic("ops"), None),
    ]
    codes = [client.open(path, method=method, headers=headers, json=body).status_code
             for method, path, headers, body in calls]
    # the traffic is representative: successes, refusals, bad input, upstream trouble
    assert {200, 201, 400, 401, 403, 404, 503} <= set(codes), list(zip([c[1] for c in calls], codes))
    # upstream trouble: SessionM down, garbage, refusing our key; Core and Braze refusing ours
    for reply in (Reply(500, {"status": "error"}), Reply(200, b"<html>"), Reply(401, {"status": "error"}),
                  Reply(200, fixture_json("get_user_offers.user_not_found.json"))):
        sessionm.on("POST", OFFERS_PATH, reply)
        client.get(f"/v1/wallets/u2?sig={sig('u2')}", headers=basic("braze"))
        client.delete("/v1/wallets/u2", headers=basic("ops"))
    sessionm.on("POST", r"/tags$", Reply(401, {"status": "error"}))
    client.post("/v1/users/u3/tags", json={"tags": ["a"]}, headers=basic("tagger"))
    braze.on("POST", r"/trigger/send$", Reply(401, {"message": "Invalid API key: braze-rest-key-4e3f"}))
    client.post("/v1/braze/trigger", json={"campaign_id": "c", "external_user_id": "u"},
                headers=bearer("sender"))
    return len(calls)


def log_text(caplog, capsys) -> str:
    """Everything logged: each record as a handler would print it (with tracebacks), and stderr."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = [formatter.format(r) for r in caplog.records]
    return "\n".join(records) + "\n" + capsys.readouterr().err


def test_no_secret_is_ever_logged(settings, app_for, sessionm, braze, caplog, capsys):
    app = app_for(settings, braze_options={"max_attempts": 2, "sleep": lambda seconds: None})
    handler = logs.configure(settings)
    redactor = next(f for f in handler.filters if isinstance(f, logs.RedactSecrets))
    secrets = every_secret(settings)
    # The fake upstreams are werkzeug servers whose request lines hold Core's key: they are the test's
    # servers, not the service (which gunicorn serves), so their INFO lines are left out.
    caplog.set_level(logging.WARNING, logger="werkzeug")

    saved, redactor.secrets = redactor.secrets, []  # pass 1: no safety net
    try:
        caplog.set_level(logging.INFO)
        exercise(app, sessionm, braze)
        text = log_text(caplog, capsys)
    finally:
        redactor.secrets = saved
    assert text.count("wallet_proxy.access") >= 20, "the requests were not logged"
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == [], f"secrets in the logs: {leaked}"

    caplog.clear()
    caplog.set_level(logging.DEBUG)  # pass 2: everything, through the service's own handler
    exercise(app, sessionm, braze)
    printed = capsys.readouterr().err
    assert printed.count('"logger":"wallet_proxy.access"') >= 20
    leaked = sorted(s for s in secrets if s in printed)
    assert leaked == [], f"secrets printed at DEBUG: {leaked}"
    # urllib3's debug line for the Core call carried the API key in its URL: the filter caught it
    assert f"/priv/v1/apps/{logs.REDACTED}/users/u1/tags" in printed
