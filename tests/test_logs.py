"""Request logs: one JSON line per request, hashed user ids, redacted secrets, text on a terminal."""
from __future__ import annotations

import base64
import io
import json
import logging
import sys

from flask import Blueprint

from tests.conftest import OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.web import logs
from wallet_proxy.web.auth import sign

WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}


def lines(text: str) -> list[dict]:
    """Every JSON log line of captured stderr (each must parse)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def access_lines(text: str) -> list[dict]:
    return [line for line in lines(text) if line["logger"] == "wallet_proxy.access"]


class TestRequestLine:
    def test_one_json_line_per_request_with_its_fields(self, client, capsys):
        capsys.readouterr()
        first = client.get("/v1/wallets/alice@example.com?culture=fr", headers=WALLET)
        second = client.get("/v1/wallets/alice@example.com?culture=fr",
                            headers={**WALLET, "X-Request-ID": "trace-123"})
        err = capsys.readouterr().err
        found = access_lines(err)
        assert len(found) == 2
        miss, hit = found
        assert miss["request_id"] == first.headers["X-Request-ID"]
        assert hit["request_id"] == "trace-123" == second.headers["X-Request-ID"]
        assert miss["method"] == "GET" and miss["route"] == "/v1/wallets/<anypath:user_id>"
        assert miss["status"] == 200 and miss["duration_ms"] >= 0
        assert miss["cache"] == "wallet-proxy; fwd=uri-miss; stored"
        assert hit["cache"].startswith("wallet-proxy; hit; ttl=")
        # the leader's SessionM time lands on its own line; a cache hit made no call
        assert miss["upstream_ms"] > 0 and "upstream_ms" not in hit
        assert miss["user"] == logs.hash_user_id("alice@example.com") == hit["user"]
        assert miss["client"] == "braze"
        assert "alice" not in err  # never the raw id: not in the path, not in the query

    def test_errors_carry_their_code(self, client, sessionm, capsys):
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        capsys.readouterr()
        client.get("/v1/wallets/bob", headers=WALLET)
        client.get("/v1/wallets/bob")
        client.get("/nowhere")
        found = access_lines(capsys.readouterr().err)
        assert [(l["status"], l.get("error")) for l in found] == [
            (503, "upstream_unavailable"), (401, "unauthorized"), (404, "not_found")]
        assert found[0]["level"] == "warning" and found[1]["level"] == "info"
        assert found[0]["detail"] == "SessionM answered HTTP 500"  # the why, on the same line
        assert "detail" not in found[1]
        assert "route" not in found[2]

    def test_signature_and_query_never_logged(self, sessionm, app_for, capsys):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="sign-key-123456"))
        sig = sign("sign-key-123456", "carol")
        capsys.readouterr()
        assert app.test_client().get(f"/v1/wallets/carol?sig={sig}", headers=WALLET).status_code == 200
        err = capsys.readouterr().err
        assert sig not in err and "sign-key-123456" not in err and "carol" not in err


class TestInternalErrors:
    def test_a_crash_is_a_json_500_and_a_log_line_with_the_traceback(self, sessionm, app_for, capsys):
        app = app_for(make_settings(sessionm.url))
        boom = Blueprint("boom", __name__)

        @boom.get("/boom")
        def explode():
            raise RuntimeError("kaboom in a view")

        app.register_blueprint(boom)
        capsys.readouterr()
        response = app.test_client().get("/boom")
        assert response.status_code == 500
        assert response.get_json() == {"ok": False,
                                       "error": {"code": "internal", "message": "internal error"}}
        assert b"kaboom" not in response.data and b"Traceback" not in response.data
        found = lines(capsys.readouterr().err)
        crash = next(l for l in found if l["logger"] == "wallet_proxy.http")
        assert crash["level"] == "error" and "kaboom in a view" in crash["exc"]
        assert next(l for l in found if l["logger"] == "wallet_proxy.access")["error"] == "internal"


class TestRedaction:
    def test_secret_in_message_args_and_traceback_is_redacted(self, sessionm, app_for, capsys):
        app_for(make_settings(sessionm.url, core_url=sessionm.url))  # configures redaction of its secrets
        log = logging.getLogger("wallet_proxy.test")
        capsys.readouterr()
        log.warning("oops %s", "core-secret")
        try:
            raise ValueError("bad key braze-rest-key core-key")
        except ValueError:
            log.exception("failed with Y29ubmVjdDpzZWNyZXQ=")
        err = capsys.readouterr().err
        for secret in ("core-secret", "core-key", "Y29ubmVjdDpzZWNyZXQ=", "bz-secret"):
            assert secret not in err
        assert err.count(logs.REDACTED) >= 3

    def test_secret_values_include_the_forms_they_travel_in(self):
        settings = make_settings("http://c", core_url="http://core", braze_url="http://b",
                                 WALLET_PROXY_REDIS_URL="redis://:redis-pass@127.0.0.1:6379/0")
        values = set(logs.secret_values(settings))
        assert {"core-key", "core-secret", "braze-rest-key", "secret", "redis-pass",
                base64.b64encode(b"core-key:core-secret").decode(),
                base64.b64encode(b"test:secret").decode()} <= values

    def test_sandbox_demo_login_is_not_redacted(self):
        from wallet_proxy.settings import parse

        assert "demo" not in logs.secret_values(parse({}))


class TestConfigure:
    def test_one_handler_however_many_apps_and_after_basicconfig(self, sessionm, app_for):
        root = logging.getLogger()
        logging.basicConfig(stream=sys.stderr)  # what the CLI does first
        app_for(make_settings(sessionm.url))
        app_for(make_settings(sessionm.url))
        ours = [h for h in root.handlers if getattr(h, "wallet_proxy", False)]
        plain = [h for h in root.handlers if type(h) is logging.StreamHandler and h.stream is sys.stderr]
        assert len(ours) == 1 and plain == []

    def test_text_on_a_terminal(self, monkeypatch):
        class Tty(io.StringIO):
            def isatty(self):
                return True

        tty = Tty()
        monkeypatch.setattr(sys, "stderr", tty)
        try:
            logs.configure()
            logging.getLogger("wallet_proxy.access").info("GET /healthz 200", extra={"status": 200,
                                                                                     "duration_ms": 1.5})
            text = tty.getvalue()
            assert "INFO wallet_proxy.access: GET /healthz 200 status=200 duration_ms=1.5" in text
            assert not text.lstrip().startswith("{")
        finally:
            monkeypatch.undo()
            logs.configure()  # back to JSON for the other tests


class TestQuietProbes:
    def test_probe_successes_are_debug_failures_are_not(self, client, capsys, caplog):
        caplog.set_level(logging.INFO)
        capsys.readouterr()
        client.get("/healthz")
        client.get("/readyz")
        client.get("/metrics")  # 401: a scrape with the wrong credentials is worth seeing
        client.get("/openapi.json")
        found = access_lines(capsys.readouterr().err)
        assert [(l["route"], l["status"]) for l in found] == [("/metrics", 401), ("/openapi.json", 200)]


def test_dev_server_request_lines_with_raw_paths_are_off(sessionm, app_for, live, capsys):
    import requests

    url = live(app_for(make_settings(sessionm.url)))
    capsys.readouterr()
    requests.get(f"{url}/v1/wallets/dana.private@example.com", headers=WALLET, timeout=5)
    err = capsys.readouterr().err
    assert access_lines(err) and "dana.private" not in err
