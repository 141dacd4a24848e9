"""POST /v1/users/<user_id>/tags: the Braze webhook relay to SessionM Core, against a fake Core on loopback."""
from __future__ import annotations

import base64
import logging
import re

import pytest

from tests.conftest import make_settings
from tests.fakes import Reply

TAGS_PATH = r"^/priv/v1/apps/core-key/users/.+/tags$"
EXTERNAL_TAGS_PATH = r"^/priv/v1/apps/core-key/external/users/.+/tags$"
AUTH = {"Authorization": "Bearer tg-secret"}


@pytest.fixture
def core(sessionm):
    sessionm.on("POST", TAGS_PATH, Reply(200, {"status": "ok", "user": {"id": "u1"}}))
    return sessionm


@pytest.fixture
def client(core, app_for):
    return app_for(make_settings(core_url=core.url)).test_client()


def post(client, user_id="user-1", body=None, query="", headers=AUTH, **kwargs):
    return client.post(f"/v1/users/{user_id}/tags{query}", json=body, headers=headers, **kwargs)


class TestAccepted:
    def test_answers_200_after_sessionm_accepted_and_forwards_body_with_basic_auth(self, client, core):
        response = post(client, body={"tags": ["vip", "winter-2026"], "ttl": 2592000})
        assert response.status_code == 200
        assert response.json == {"ok": True, "user_id": "user-1", "tags": ["vip", "winter-2026"],
                                 "ttl": 2592000}
        (call,) = core.calls("/tags$")
        assert call.path == "/priv/v1/apps/core-key/users/user-1/tags"
        assert call.json == {"tags": ["vip", "winter-2026"], "ttl": 2592000}
        assert call.headers["Authorization"] == "Basic " + base64.b64encode(b"core-key:core-secret").decode()

    @pytest.mark.parametrize("ttl", ["2592000", " 60 "])
    def test_a_ttl_written_by_liquid_as_a_string_of_digits_is_accepted(self, client, core, ttl):
        # Braze builds webhook bodies with Liquid: "ttl": "{{ 30 | times: 86400 }}" is a string.
        response = post(client, body={"tags": ["vip"], "ttl": ttl})
        assert response.status_code == 200
        assert response.json["ttl"] == int(ttl)
        assert core.calls("/tags$")[0].json == {"tags": ["vip"], "ttl": int(ttl)}

    def test_ttl_is_optional_and_not_sent_when_absent(self, client, core):
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 200
        assert response.json["ttl"] is None
        assert core.calls("/tags$")[0].json == {"tags": ["vip"]}

    def test_user_id_is_percent_encoded_upstream(self, client, core):
        assert post(client, user_id="a+b@x.com", body={"tags": ["vip"]}).status_code == 200
        assert core.calls("/tags$")[0].path == "/priv/v1/apps/core-key/users/a+b@x.com/tags"

    def test_external_id_uses_cores_external_path(self, client, core):
        core.on("POST", EXTERNAL_TAGS_PATH, Reply(200, {"status": "ok"}))
        response = post(client, user_id="cust-42", body={"tags": ["vip"]}, query="?id_type=external")
        assert response.status_code == 200
        assert response.json["user_id"] == "cust-42"
        assert [c.path for c in core.calls("/tags$")] == ["/priv/v1/apps/core-key/external/users/cust-42/tags"]


class TestBadInput:
    @pytest.mark.parametrize("body, field, reason", [
        ({}, "tags", "Missing data"),
        ({"tags": []}, "tags", "Length must be between 1 and 50"),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags", "at most 50 tags a call (got 51)"),  # counted before any tag is read
        ({"tags": [""]}, "tags", "tags.0: "),
        ({"tags": ["   "]}, "tags", "empty or only spaces"),
        ({"tags": ["x" * 129]}, "tags", "Length must be between 1 and 128"),
        ({"tags": [5]}, "tags", "Not a valid string"),
        ({"tags": "vip"}, "tags", "Not a valid list"),
        ({"tags": ["vip"], "ttl": 0}, "ttl", "greater than or equal to 1"),
        ({"tags": ["vip"], "ttl": -5}, "ttl", "greater than or equal to 1"),
        ({"tags": ["vip"], "ttl": "30d"}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "ttl": "1.5"}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "ttl": ""}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "ttl": "-5"}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "ttl": "0"}, "ttl", "greater than or equal to 1"),
        ({"tags": ["vip"], "ttl": "٣٠"}, "ttl", "Not a valid integer"),  # Arabic-Indic digits: not ASCII
        ({"tags": ["vip\nsegment"]}, "tags", "control characters (found U+000A)"),
        ({"tags": ["ok", "a\tb"]}, "tags", "tags.1: must not contain control characters (found U+0009)"),
        ({"tags": ["nul\u0000"]}, "tags", "U+0000"),
        ({"tags": ["del\u007f"]}, "tags", "U+007F"),
        ({"tags": ["nel\u0085"]}, "tags", "U+0085"),
        ({"tags": ["vip"], "ttl": 1.5}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "ttl": True}, "ttl", "Not a valid integer"),
        ({"tags": ["vip"], "TTL": 30}, "TTL", "Unknown field"),
    ])
    def test_bad_body_is_400_naming_the_field_and_sessionm_is_not_called(self, client, core, body, field,
                                                                           reason):
        response = post(client, body=body)
        assert response.status_code == 400
        error = response.json["error"]
        assert error["code"] == "invalid_request"
        assert field in error["details"]
        # the field is named as a path: "tags: ..." or, for one bad item, "tags.1: ..."
        assert re.search(rf"(^|; |: ){re.escape(field)}(\.\d+)?: ", error["message"])
        assert reason in error["message"]
        assert core.calls("/tags$") == []

    def test_each_bad_field_is_named_at_once(self, client, core):
        response = post(client, body={"tags": [], "ttl": 0})
        assert response.status_code == 400
        assert set(response.json["error"]["details"]) == {"tags", "ttl"}
        assert core.calls("/tags$") == []

    @pytest.mark.parametrize("data", [b"not json", b"[\"vip\"]", b"", b"null"])
    def test_body_that_is_not_a_json_object_is_400(self, client, core, data):
        response = client.post("/v1/users/user-1/tags", data=data, headers={**AUTH, "Content-Type":
                                                                             "application/json"})
        assert response.status_code == 400
        assert "JSON object" in response.json["error"]["message"]
        assert core.calls("/tags$") == []

    @pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                              "multipart/form-data; boundary=x"])
    def test_json_without_the_json_content_type_is_415(self, client, core, content_type):
        # SPEC "All JSON POST routes": a page of another origin can make a browser post these
        # (a text/plain "form" added tags cross-site); application/json needs a preflight.
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        response = client.post("/v1/users/user-1/tags", data=b'{"tags": ["vip"]}', headers=headers)
        assert response.status_code == 415
        assert response.json["error"]["code"] == "unsupported_media_type"
        assert "application/json" in response.json["error"]["message"]
        assert core.calls("/tags$") == []

    def test_bad_user_id_is_400(self, client, core):
        response = post(client, user_id="bad id!", body={"tags": ["vip"]})
        assert response.status_code == 400
        assert "user_id" in response.json["error"]["details"]
        assert core.calls("/tags$") == []

    def test_bad_id_type_is_400(self, client, core):
        response = post(client, body={"tags": ["vip"]}, query="?id_type=email")
        assert response.status_code == 400
        assert "id_type" in response.json["error"]["details"]
        assert core.calls("/tags$") == []


class TestSessionMAnswers:
    def test_unknown_user_is_404(self, client, core):
        core.on("POST", TAGS_PATH, Reply(404, {"status": "error", "errors": {"code": "user_not_found"}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 404
        assert response.json["error"]["code"] == "user_not_found"

    def test_user_not_found_inside_200_is_404(self, client, core):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "error", "errors": {"code": "user_not_found"}}))
        assert post(client, body={"tags": ["vip"]}).status_code == 404

    def test_status_error_inside_200_is_never_a_2xx(self, client, core):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "error", "errors": {"code": "tag_limit"}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 502
        assert response.json["ok"] is False

    def test_throttled_is_429_with_retry_after(self, client, core):
        core.on("POST", TAGS_PATH, Reply(429, {"status": "error"}, headers={"Retry-After": "7"}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_sessionm_down_is_503_with_retry_after(self, client, core, status):
        core.on("POST", TAGS_PATH, Reply(status, {"status": "error"}))
        response = post(client, body={"tags": ["vip"], "ttl": 60})
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1

    @pytest.mark.parametrize("reply", [Reply(500, {"status": "error"}), Reply(503, b"down"),
                                       Reply(200, {"status": "error",
                                                   "errors": {"code": "internal_server_error"}})])
    def test_a_counter_tag_core_failed_on_is_409_outcome_unknown_not_retried(self, client, core, reply):
        # Issue #21 item 10. A tag without ttl counts once per call it reaches
        # (https://docs.sessionm.com/developer/APIs/Core/Customers/customers_tags.htm), and a 5xx or
        # INTERNAL_SERVER_ERROR (https://docs.sessionm.com/developer/APIs/Core/Overview/
        # overview_statuses_errors.htm) came after Core received it: it may have counted. Braze retries a
        # 503 up to five times; a 409 it does not.
        core.on("POST", TAGS_PATH, reply)
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 409 and response.json["error"]["code"] == "outcome_unknown"
        assert "Retry-After" not in response.headers
        assert len(core.calls(TAGS_PATH)) == 1

    def test_refused_connection_is_503_with_retry_after(self, app_for):
        from tests.conftest import free_port

        client = app_for(make_settings(core_url=f"http://127.0.0.1:{free_port()}")).test_client()
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 503
        assert "Retry-After" in response.headers

    def test_slow_sessionm_is_504_so_braze_retries_an_expiring_tag(self, core, app_for):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "ok"}, delay=1.0))
        client = app_for(make_settings(core_url=core.url, WALLET_PROXY_UPSTREAM_TIMEOUT="0.2")).test_client()
        response = post(client, body={"tags": ["vip"], "ttl": 60})
        assert response.status_code == 504

    def test_slow_sessionm_is_409_outcome_unknown_for_a_counter_tag(self, core, app_for):
        # A tag without ttl counts once per call (https://docs.sessionm.com/developer/APIs/Core/Customers/
        # customers_tags.htm): Core may have counted it, so Braze must not send it again (a 409 is not
        # retried; a 504 would be, up to 5 times).
        core.on("POST", TAGS_PATH, Reply(200, {"status": "ok"}, delay=1.0))
        client = app_for(make_settings(core_url=core.url, WALLET_PROXY_UPSTREAM_TIMEOUT="0.2")).test_client()
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 409
        assert response.json["error"]["code"] == "outcome_unknown"
        assert "Retry-After" not in response.headers

    @pytest.mark.parametrize("ttl, status", [(None, 409), (60, 503)])
    def test_connection_dropped_after_the_request_was_sent(self, app_for, ttl, status):
        import socket
        import threading

        listener = socket.create_server(("127.0.0.1", 0))
        received = []

        def serve():
            conn, _ = listener.accept()
            with conn:
                received.append(conn.recv(65536))  # read the request, then hang up without an answer

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            client = app_for(make_settings(core_url=url)).test_client()
            response = post(client, body={"tags": ["vip"], "ttl": ttl})
        finally:
            thread.join(5)
            listener.close()
        assert received and b"/tags" in received[0]
        assert response.status_code == status
        if ttl is None:
            assert response.json["error"]["code"] == "outcome_unknown"

    def test_sessionm_refusing_the_tags_is_a_4xx_braze_does_not_retry(self, client, core):
        core.on("POST", TAGS_PATH, Reply(422, {"status": "error", "errors": {"code": "invalid_tag"}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 422
        assert response.json["error"]["code"] == "upstream_refused"
        assert "INVALID_TAG" in response.json["error"]["message"]

    def test_sessionm_refusing_our_credentials_is_502_without_the_secret(self, client, core):
        core.on("POST", TAGS_PATH, Reply(401, {"status": "error"}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 502
        assert b"core-secret" not in response.data


class TestSessionMCodes:
    """Core answers errors inside HTTP 200 with a code, in either case (upper in SessionM's table, lower
    in its example): https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm
    """

    @pytest.mark.parametrize("code", ["USER_NOT_FOUND", "user_not_found", "REQUIRES_REGISTERED_USER",
                                      "requires_registered_user"])
    def test_unknown_user_codes_are_404(self, client, core, code):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "error", "errors": {"code": code}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 404
        assert response.json["error"]["code"] == "user_not_found"

    @pytest.mark.parametrize("code", ["VALIDATION", "validation", "MISSING_DATA", "Argument_Error"])
    def test_our_request_refused_as_invalid_is_422_which_braze_does_not_retry(self, client, core, code):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "ERROR", "errors": {"code": code}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 422
        assert response.json["error"]["code"] == "upstream_refused"
        assert code.upper() in response.json["error"]["message"]
        assert len(core.calls("/tags$")) == 1

    @pytest.mark.parametrize("code", ["INVALID_API_KEY", "invalid_auth_token", "ACCESS_DENIED"])
    def test_credential_codes_are_502_and_logged_loudly(self, client, core, code, caplog):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "error", "errors": {"code": code}}))
        with caplog.at_level(logging.ERROR):
            response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 502
        assert b"core-secret" not in response.data
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "credentials" in r.getMessage()]
        assert loud and code.upper() in loud[0].getMessage()

    def test_any_other_code_is_502(self, client, core):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "error", "errors": {"code": "NOT_AVAILABLE"}}))
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 502
        assert "NOT_AVAILABLE" in response.json["error"]["message"]

    def test_status_ok_in_either_case_is_accepted(self, client, core):
        core.on("POST", TAGS_PATH, Reply(200, {"status": "OK", "user": {"id": "user-1"}}))
        assert post(client, body={"tags": ["vip"]}).status_code == 200

    def test_an_answer_without_status_ok_is_never_a_2xx(self, client, core):
        core.on("POST", TAGS_PATH, Reply(200, {"user": {"id": "user-1"}}))
        assert post(client, body={"tags": ["vip"]}).status_code == 502


class TestAccess:
    def test_needs_credentials(self, client, core):
        assert post(client, body={"tags": ["vip"]}, headers={}).status_code == 401
        assert core.calls("/tags$") == []

    def test_needs_the_tags_scope(self, client, core):
        response = post(client, body={"tags": ["vip"]}, headers={"Authorization": "Bearer bz-secret"})
        assert response.status_code == 403
        assert core.calls("/tags$") == []

    def test_without_core_settings_is_503_not_configured(self, sessionm, app_for):
        client = app_for(make_settings(connect_url=sessionm.url)).test_client()
        response = post(client, body={"tags": ["vip"]})
        assert response.status_code == 503
        assert response.json["error"]["code"] == "not_configured"


class TestSandbox:
    def test_sandbox_core_stores_the_tags(self, app_for):
        from wallet_proxy.settings import parse

        app = app_for(parse({}))
        response = post(app.test_client(), user_id="someone", body={"tags": ["vip", "gold"], "ttl": 60},
                        headers={"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()})
        assert response.status_code == 200
        assert set(app.extensions["wallet_proxy"].sandbox.tags["someone"]) == {"vip", "gold"}

    def test_sandbox_core_counts_counter_tags_and_renews_expiring_ones(self, app_for):
        from wallet_proxy.settings import parse

        now = [1_000_000.0]
        app = app_for(parse({}))
        sim = app.extensions["wallet_proxy"].sandbox
        sim.clock = lambda: now[0]
        basic = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}
        for _ in range(3):
            assert post(app.test_client(), user_id="counted", body={"tags": ["visit"]},
                        headers=basic).status_code == 200
        assert sim.tags["counted"]["visit"] == {"count": 3}
        assert post(app.test_client(), user_id="counted", body={"tags": ["promo"], "ttl": 60},
                    headers=basic).status_code == 200
        now[0] += 30
        assert post(app.test_client(), user_id="counted", body={"tags": ["promo"], "ttl": 60},
                    headers=basic).status_code == 200
        assert sim.tags["counted"]["promo"] == {"expires_at": 1_000_000.0 + 30 + 60}, "renewed, not counted"
        now[0] += 100
        post(app.test_client(), user_id="counted", body={"tags": ["visit"]}, headers=basic)
        assert "promo" not in sim.tags["counted"], "an expired tag disappears"
        assert sim.tags["counted"]["visit"] == {"count": 4}

    def test_sandbox_core_counts_a_counter_tag_whose_answer_never_came(self, app_for):
        from wallet_proxy.settings import parse

        app = app_for(parse({"WALLET_PROXY_UPSTREAM_TIMEOUT": "0.2"}))
        response = post(app.test_client(), user_id="fault-timeout-7", body={"tags": ["visit"]},
                        headers={"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()})
        assert (response.status_code, response.json["error"]["code"]) == (409, "outcome_unknown")
        assert app.extensions["wallet_proxy"].sandbox.tags["fault-timeout-7"]["visit"] == {"count": 1}

    @pytest.mark.parametrize("user_id, status, code", [("unknown-1", 404, "user_not_found"),
                                                       ("fault-invalid-1", 422, "upstream_refused")])
    def test_sandbox_core_answers_documented_codes_inside_200(self, app_for, user_id, status, code):
        from wallet_proxy.settings import parse

        app = app_for(parse({}))
        response = post(app.test_client(), user_id=user_id, body={"tags": ["vip"]},
                        headers={"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()})
        assert (response.status_code, response.json["error"]["code"]) == (status, code)
