"""Issue #20 item 2 (one way to admit a request) and #21 items 4, 5, 13: each rule of the issue's table
that is about inbound requests, through the door a real caller uses -- real HTTP to the service on
loopback, with a fake SessionM and a fake Braze on loopback too."""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import make_settings
from tests.fakes import FakeBraze, Reply
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.web.auth import sign

CAMPAIGN = "/campaigns/trigger/send"
CANVAS = "/canvas/trigger/send"
BEARER = {"Authorization": "Bearer secret"}
EXT_PATH = r"^/priv/v1/apps/core-key/external/users/.+$"


@pytest.fixture
def braze():
    fake = FakeBraze()
    for path in (CAMPAIGN, CANVAS):
        fake.on("POST", path, Reply(201, {"dispatch_id": "d-1", "message": "success"}))
    yield fake
    fake.close()


@pytest.fixture
def track(clock):
    """The sandbox's Braze /users/track simulator on loopback (for the sync route)."""
    from tests.fakes import LiveServer

    state = SimState(clock=clock)
    server = LiveServer(make_sandbox_app(state))
    yield server.url
    server.close()


@pytest.fixture
def serve(sessionm, braze, app_for, live):
    """The service on loopback, with SessionM (Connect and Core) and Braze configured."""

    def build(braze_url=None, **env):
        settings = make_settings(sessionm.url, core_url=sessionm.url, braze_url=braze_url or braze.url, **env)
        return live(app_for(settings, braze_options={"sleep": lambda s: None, "max_attempts": 2,
                                                     "timeout": 1.0}))

    return build


def secret_names(value, path="") -> list[str]:
    """Every key, at any depth, that is some spelling of an API key."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            if "apikey" in key.lower().replace("_", "").replace(" ", "").replace("-", ""):
                found.append(path + key)
            found += secret_names(child, f"{path}{key}.")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += secret_names(child, f"{path}{index}.")
    return found


class TestCredentials:
    def test_thirty_wrong_basic_attempts_on_the_preview_reach_429_with_retry_after(self, serve):
        url = serve()
        statuses = [requests.get(f"{url}/preview?login=basic", auth=("ops", f"guess-{i}"), timeout=5)
                    for i in range(30)]
        codes = [r.status_code for r in statuses]
        assert codes[:10] == [401] * 10
        assert 429 in codes, codes
        refused = statuses[codes.index(429)]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # the right secret is refused too while the address is throttled: a guess cannot be told apart
        right = requests.get(f"{url}/preview", auth=("ops", "ops-secret"), timeout=5)
        assert right.status_code == 429

    def test_bearer_guesses_on_the_wallet_route_are_throttled_but_an_admitted_client_is_not(self, serve):
        url = serve()
        assert requests.get(f"{url}/v1/wallets/u-1", headers=BEARER, timeout=5).status_code == 200
        codes = [requests.get(f"{url}/v1/wallets/u-1", headers={"Authorization": f"Bearer guess-{i}"},
                              timeout=5).status_code for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
        # Braze calls from shared addresses: the campaign whose credential already worked keeps working
        assert requests.get(f"{url}/v1/wallets/u-1", headers=BEARER, timeout=5).status_code == 200

    def test_the_form_basic_and_bearer_share_one_count(self, serve):
        url = serve()
        for i in range(5):
            requests.get(f"{url}/v1/wallets/u-1", headers={"Authorization": f"Bearer guess-{i}"}, timeout=5)
        for i in range(5):
            requests.get(f"{url}/preview", auth=("nobody", f"guess-{i}"), timeout=5)
        answer = requests.post(f"{url}/v1/braze/trigger", json={}, auth=("test", "wrong"), timeout=5)
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "too_many_failures"

    def test_a_metrics_client_reads_metrics_and_nothing_else(self, serve):
        url = serve(WALLET_PROXY_CLIENTS="prom:prom-secret-123456:metrics,ops:ops-secret:admin")
        prom = {"Authorization": "Bearer prom-secret-123456"}
        scraped = requests.get(f"{url}/metrics", headers=prom, timeout=5)
        assert scraped.status_code == 200 and "wallet_proxy_requests_total" in scraped.text
        assert requests.get(f"{url}/metrics", auth=("ops", "ops-secret"), timeout=5).status_code == 200
        assert requests.get(f"{url}/v1/wallets/u-1", headers=prom, timeout=5).status_code == 403
        assert requests.get(f"{url}/preview", headers=prom, timeout=5).status_code == 403
        assert requests.delete(f"{url}/v1/wallets/u-1", headers=prom, timeout=5).status_code == 403


class TestSignatures:
    KEY = "sign-key"

    def test_sync_answers_wallet_data_only_with_a_sig(self, serve, track):
        url = serve(braze_url=track, WALLET_PROXY_SIGNING_KEY=self.KEY)
        bare = requests.post(f"{url}/v1/users/user-1/sync", headers=BEARER, timeout=5)
        assert bare.status_code == 403 and bare.json()["error"]["code"] == "bad_signature"
        assert "attributes" not in bare.json()
        wrong = requests.post(f"{url}/v1/users/user-1/sync?sig={sign(self.KEY, 'user-2')}", headers=BEARER,
                              timeout=5)
        assert wrong.status_code == 403
        signed = requests.post(f"{url}/v1/users/user-1/sync?sig={sign(self.KEY, 'user-1')}", headers=BEARER,
                               timeout=5)
        assert signed.status_code == 200, signed.text

    @pytest.mark.parametrize("route", ["wallet", "sync"])
    def test_a_sig_covers_the_id_type(self, serve, track, sessionm, route):
        sessionm.on("GET", EXT_PATH, Reply(200, {"status": "ok", "user": {"id": "seed-9"}}))
        url = serve(braze_url=track, WALLET_PROXY_SIGNING_KEY=self.KEY)

        def call(sig):
            if route == "wallet":
                return requests.get(f"{url}/v1/wallets/alice?id_type=external&sig={sig}", headers=BEARER,
                                    timeout=5)
            return requests.post(f"{url}/v1/users/alice/sync?id_type=external&sig={sig}", headers=BEARER,
                                 timeout=5)

        # the sig of SessionM id "alice" must not read the customer whose external id is "alice"
        stolen = call(sign(self.KEY, "alice"))
        assert stolen.status_code == 403 and stolen.json()["error"]["code"] == "bad_signature"
        assert sessionm.calls(EXT_PATH) == []
        bound = call(sign(self.KEY, "alice", "external"))
        assert bound.status_code == 200, bound.text
        # and the documented text of that sig: HMAC-SHA256 of "external/<id>"
        import hashlib
        import hmac

        assert sign(self.KEY, "alice", "external") == hmac.new(self.KEY.encode(), b"external/alice",
                                                               hashlib.sha256).hexdigest()

    def test_a_seed_sig_is_unchanged_so_existing_templates_keep_working(self, serve):
        url = serve(WALLET_PROXY_SIGNING_KEY=self.KEY)
        import hashlib
        import hmac

        sig = hmac.new(self.KEY.encode(), b"user-1", hashlib.sha256).hexdigest()
        for query in (f"sig={sig}", f"sig={sig}&id_type=seed", f"sig={sig}&id_type=user_id"):
            assert requests.get(f"{url}/v1/wallets/user-1?{query}", headers=BEARER, timeout=5).status_code == 200


class TestApiKeyNeverForwarded:
    FLAT = {"campaign_id": "c", "external_user_id": "u1", "API_KEY": "k1", "apiKey": "k2", "Api Key": "k3",
            "api-key": "k4", "offer": {"title": "t", "Api_Key": "k5", "deeper": [{"apiKey": "k6"}]}}

    def test_the_flat_door_drops_every_spelling_at_every_depth(self, serve, braze):
        url = serve()
        answer = requests.post(f"{url}/v1/braze/trigger", json=self.FLAT, headers=BEARER, timeout=5)
        assert answer.status_code == 201, answer.text
        (sent,) = braze.calls(CAMPAIGN)
        assert secret_names(sent.json) == [] and not any(f"k{i}" in sent.body.decode() for i in range(1, 7))
        assert sent.json["trigger_properties"]["offer"]["title"] == "t"

    def test_recipients_own_api_keys_are_dropped_too(self, serve, braze):
        url = serve()
        body = {"campaign_id": "c", "recipients": [{"external_user_id": "u1", "api_key": "k7", "n": 1},
                                                   {"external_user_id": "u2", "ApiKey": "k8"}]}
        assert requests.post(f"{url}/v1/braze/trigger", json=body, headers=BEARER, timeout=5).status_code == 201
        relay = {"campaign_id": "c", "API_KEY": "k9", "trigger_properties": {"api_key": "k10"},
                 "recipients": [{"external_user_id": "u1", "api_key": "k11",
                                 "trigger_properties": {"apiKey": "k12", "x": 1}}]}
        assert requests.post(f"{url}{CAMPAIGN}", json=relay, headers=BEARER, timeout=5).status_code == 201
        for call in braze.calls(CAMPAIGN):
            assert secret_names(call.json) == [], call.json
        assert braze.calls(CAMPAIGN)[1].json["recipients"][0]["trigger_properties"] == {"x": 1}


class TestDryRun:
    @pytest.mark.parametrize("query", ["?dry_run", "?dry_run=", "?dry_run=true", "?dry_run=TRUE",
                                       "?dry_run=yes", "?dry_run=%201"])
    @pytest.mark.parametrize("path", ["/v1/braze/trigger", CAMPAIGN])
    def test_anything_but_1_or_0_is_400_and_never_a_send(self, serve, braze, query, path):
        url = serve()
        body = {"campaign_id": "c", "external_user_id": "u1"} if path.startswith("/v1") else {
            "campaign_id": "c", "recipients": [{"external_user_id": "u1"}]}
        answer = requests.post(f"{url}{path}{query}", json=body, headers=BEARER, timeout=5)
        assert answer.status_code == 400, answer.text
        assert "dry_run" in answer.json()["error"]["message"]
        assert braze.requests == []

    def test_1_is_a_dry_run_and_0_a_send(self, serve, braze):
        url = serve()
        body = {"campaign_id": "c", "external_user_id": "u1"}
        dry = requests.post(f"{url}/v1/braze/trigger?dry_run=1", json=body, headers=BEARER, timeout=5)
        assert dry.status_code == 200 and braze.requests == []
        sent = requests.post(f"{url}/v1/braze/trigger?dry_run=0", json=body, headers=BEARER, timeout=5)
        assert sent.status_code == 201 and len(braze.calls(CAMPAIGN)) == 1

    def test_the_body_takes_json_booleans_only(self, serve, braze):
        url = serve()
        for flag in ("true", 1, None, "1"):
            body = {"campaign_id": "c", "external_user_id": "u1", "dry_run": flag}
            assert requests.post(f"{url}/v1/braze/trigger", json=body, headers=BEARER,
                                 timeout=5).status_code == 400
        assert braze.requests == []

    def test_one_id_type_vocabulary_on_every_route(self, serve, sessionm):
        url = serve()
        sessionm.on("POST", r"/tags$", Reply(200, {"status": "ok"}))
        for id_type in ("seed", "user_id"):
            assert requests.get(f"{url}/v1/wallets/u-1?id_type={id_type}", headers=BEARER,
                                timeout=5).status_code == 200
            assert requests.post(f"{url}/v1/users/u-1/tags?id_type={id_type}", json={"tags": ["a"]},
                                 headers=BEARER, timeout=5).status_code == 200
        for route in ("get /v1/wallets/u-1", "post /v1/users/u-1/tags", "post /v1/users/u-1/sync"):
            method, path = route.split()
            answer = requests.request(method, f"{url}{path}?id_type=customer", json={"tags": ["a"]},
                                      headers=BEARER, timeout=5)
            assert answer.status_code == 400 and "id_type" in answer.json()["error"]["message"], route


class TestJsonBodies:
    @pytest.mark.parametrize("raw, reason", [
        (b'{"campaign_id": "c", "external_user_id": "u", "points": 1e400}', "not finite"),
        (b'{"campaign_id": "c", "external_user_id": "u", "points": NaN}', "not finite"),
        (b'{"campaign_id": "c", "external_user_id": "u", "name": "\\ud800"}', "unpaired surrogate"),
        (b'{"campaign_id": "c", "campaign_id": "d", "external_user_id": "u"}', "same key twice"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, "nested deeper than 32"),
    ])
    @pytest.mark.parametrize("path", ["/v1/braze/trigger", CAMPAIGN])
    def test_refused_before_any_route_looks_inside(self, serve, braze, raw, reason, path):
        url = serve()
        answer = requests.post(f"{url}{path}", data=raw, headers={**BEARER, "Content-Type": "application/json"},
                               timeout=5)
        assert answer.status_code == 400 and reason in answer.json()["error"]["message"], answer.text
        assert braze.requests == []

    def test_a_null_recipient_beside_a_misplaced_property_is_400_not_500(self, serve, braze):
        url = serve()
        body = {"canvas_id": "v", "recipients": [None, {"external_user_id": "u", "trigger_properties": {}}]}
        answer = requests.post(f"{url}{CANVAS}", json=body, headers=BEARER, timeout=5)
        assert answer.status_code == 400, answer.text
        assert {"recipients.0._schema", "recipients.1.trigger_properties"} <= {
            line.split(":")[0] for line in answer.json()["errors"]}

    @pytest.mark.parametrize("path", ["/v1/braze/trigger", CAMPAIGN])
    def test_61000_recipients_are_refused_by_count_before_any_is_validated(self, serve, braze, path):
        url = serve()
        recipients = [{"braze_id": "1"}] * 61_000
        data = json.dumps({"campaign_id": "c", "recipients": recipients}, separators=(",", ":")).encode()
        assert len(data) <= 1_048_576  # within the 1 MiB body limit
        answer = requests.post(f"{url}{path}", data=data, headers={**BEARER, "Content-Type": "application/json"},
                               timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"]["details"] == {"recipients": [
            "at most 2500 recipients a call (got 61000); send the rest in another call"]}


class TestBrazeDoor:
    """Every answer under Braze's paths is Braze-shaped: a Python Braze client reads `message` and fails
    with KeyError('message') otherwise (https://braze.com/docs/api/errors)."""

    def braze_shaped(self, answer, status):
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert isinstance(body["message"], str) and body["message"]
        assert isinstance(body["errors"], list) and body["errors"]
        assert body["ok"] is False and body["error"]["code"]
        return body

    def test_unknown_paths_and_wrong_methods(self, serve):
        url = serve()
        self.braze_shaped(requests.post(f"{url}/campaigns/trigger/sendd", json={}, headers=BEARER, timeout=5),
                          404)
        self.braze_shaped(requests.post(f"{url}/users/track", json={}, headers=BEARER, timeout=5), 404)
        answer = self.braze_shaped(requests.get(f"{url}{CAMPAIGN}", headers=BEARER, timeout=5), 405)
        assert answer["error"]["code"] == "method_not_allowed"
        # our own routes keep our own shape
        assert "message" not in requests.get(f"{url}/v1/nope", headers=BEARER, timeout=5).json()

    def test_our_own_500(self, serve, monkeypatch):
        from wallet_proxy.sends import routes

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(routes, "plan_native", broken)
        url = serve()
        body = self.braze_shaped(requests.post(f"{url}{CAMPAIGN}", json={"campaign_id": "c", "broadcast": True},
                                               headers=BEARER, timeout=5), 500)
        assert "a bug" not in json.dumps(body)

    def test_our_client_rate_429_carries_brazes_rate_headers(self, serve):
        url = serve(WALLET_PROXY_CLIENT_RATE="1")
        body = {"campaign_id": "c", "recipients": [{"external_user_id": "u1"}]}
        answers = [requests.post(f"{url}{CAMPAIGN}", json=body, headers=BEARER, timeout=5) for _ in range(3)]
        limited = answers[-1]
        self.braze_shaped(limited, 429)
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() <= reset <= time.time() + 5 and limited.headers["X-RateLimit-Remaining"] == "0"
        assert limited.headers["Retry-After"]


class TestBrazeLimits:
    def test_properties_are_measured_as_sent_utf8(self, serve, braze):
        """20,000 x é is 40 KB in UTF-8 and 120 KB as \\u escapes: what Braze gets must be the 40 KB."""
        url = serve()
        body = {"campaign_id": "c", "external_user_id": "u1", "note": "é" * 20_000}
        assert requests.post(f"{url}/v1/braze/trigger", json=body, headers=BEARER, timeout=5).status_code == 201
        (sent,) = braze.calls(CAMPAIGN)
        assert len(sent.body) < 50 * 1024 and "é".encode() in sent.body
        over = {"campaign_id": "c", "external_user_id": "u1", "note": "é" * 30_000}  # 60 KB as sent
        answer = requests.post(f"{url}/v1/braze/trigger", json=over, headers=BEARER, timeout=5)
        assert answer.status_code == 400 and "trigger_properties" in answer.text
        assert len(braze.calls(CAMPAIGN)) == 1

    @pytest.mark.parametrize("ids", [
        {"braze_campaign_id": "c", "braze_canvas_id": ""},
        {"braze_campaign_id": "c", "braze_canvas_id": "   "},
        {"campaign_id": "c", "canvas_id": ""},
    ])
    def test_an_empty_id_counts_as_absent(self, serve, braze, ids):
        """SessionM's advanced settings may carry both names, one of them empty (#21 item 5): the
        advanced-settings example on https://braze.com/docs/partners/message_orchestration/channel_extensions/loyalty/sessionm
        carries `braze_campaign_id` and `braze_canvas_id` together, and SessionM does not retry a 400."""
        url = serve()
        answer = requests.post(f"{url}/v1/braze/trigger", json={**ids, "external_user_id": "u1"},
                               headers=BEARER, timeout=5)
        assert answer.status_code == 201, answer.text
        (sent,) = braze.calls(CAMPAIGN)
        assert sent.json["campaign_id"] == "c" and "canvas_id" not in sent.json
        assert not {"braze_canvas_id", "canvas_id"} & set(sent.json.get("trigger_properties", {}))

    def test_a_recipient_listed_twice_keeps_its_last_properties(self, serve, braze):
        """Braze "uses the trigger properties from the last occurrence"
        (https://www.braze.com/docs/api/objects_filters/recipient_object)."""
        url = serve()
        body = {"campaign_id": "c", "recipients": [{"external_user_id": "u1", "trigger_properties": {"n": 1}},
                                                   {"external_user_id": "u2"},
                                                   {"external_user_id": "u1", "trigger_properties": {"n": 2}}]}
        answer = requests.post(f"{url}{CAMPAIGN}", json=body, headers=BEARER, timeout=5)
        assert answer.status_code == 201
        sent = braze.calls(CAMPAIGN)[0].json["recipients"]
        assert [r.get("trigger_properties") for r in sent if r["external_user_id"] == "u1"] == [{"n": 2}]


def command(*args) -> list[str]:
    """The installed `wallet-proxy` console script (as an operator runs it)."""
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "wallet-proxy"
    assert script.exists(), "the package is installed (make install) with its console script"
    return [str(script), *args]


def bare_env(**more) -> dict:
    """The environment without any wallet-proxy, SessionM or Braze setting."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(more)
    return env


class TestCommandLine:
    """No command but `serve` runs on the built-in simulators unless WALLET_PROXY_SANDBOX=1: a run that
    lost its environment wrote made-up wallets into the --state file, which later hid real values."""

    @pytest.mark.parametrize("args", [["tags", "import", "users.csv", "--tag", "vip"],
                                      ["attributes", "sync", "users.csv"],
                                      ["prewarm", "users.csv"]])
    def test_every_command_refuses_the_simulators_unless_asked(self, tmp_path, args):
        import subprocess

        (tmp_path / "users.csv").write_text("user_id\nu1\nu2\n")
        result = subprocess.run(command(*args), cwd=tmp_path, env=bare_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "WALLET_PROXY_SANDBOX=1" in result.stderr
        assert all(name in result.stderr for name in ("SESSIONM_CONNECT_URL", "SESSIONM_CORE_URL",
                                                      "BRAZE_REST_URL"))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["users.csv"], "nothing written"

    def test_with_sandbox_1_a_command_runs_on_the_simulators_and_says_so(self, tmp_path):
        import subprocess

        (tmp_path / "users.csv").write_text("user_id\nu1\nu2\n")
        result = subprocess.run(command("tags", "import", "users.csv", "--tag", "vip", "--rate", "1000"),
                                cwd=tmp_path, env=bare_env(WALLET_PROXY_SANDBOX="1"), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "2 tagged" in result.stdout and "simulators" in result.stderr

    def test_the_importer_refuses_a_ttl_the_webhook_refuses(self, tmp_path, serve, sessionm):
        import subprocess

        from wallet_proxy.tags.rules import MAX_TTL

        url = serve()
        webhook = requests.post(f"{url}/v1/users/u1/tags", json={"tags": ["vip"], "ttl": 99999999999},
                                headers=BEARER, timeout=5)
        assert webhook.status_code == 400
        (tmp_path / "rows.csv").write_text(f"user_id,tags,ttl\nu1,vip,99999999999\nu2,vip,{MAX_TTL}\n")
        env = bare_env(WALLET_PROXY_SANDBOX="1")
        result = subprocess.run(command("tags", "import", "rows.csv", "--rate", "1000"), cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "1 tagged" in result.stdout, result.stdout + result.stderr
        rejects = (tmp_path / "rows.rejects.csv").read_text()
        assert "u1" in rejects and f"between 1 and {MAX_TTL}" in rejects
        option = subprocess.run(command("tags", "import", "rows.csv", "--tag", "x", "--ttl", "99999999999"),
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert option.returncode == 2 and "--ttl" in option.stderr


class TestDryRunSpellings:
    @pytest.mark.parametrize("name", ["dryRun", "Dry Run", "DRY_RUN"])
    def test_any_spelling_of_dry_run_is_the_flag_never_a_property(self, serve, braze, name):
        url = serve()
        body = {"campaign_id": "c", "external_user_id": "u1", name: True}
        answer = requests.post(f"{url}/v1/braze/trigger", json=body, headers=BEARER, timeout=5)
        assert answer.status_code == 200 and answer.json()["dry_run"] is True, answer.text
        assert braze.requests == []

    def test_any_spelling_of_message_id_is_the_idempotency_key(self, serve, braze):
        url = serve()
        for _ in range(2):
            body = {"campaign_id": "c", "external_user_id": "u1", "messageId": "m-1"}
            assert requests.post(f"{url}/v1/braze/trigger", json=body, headers=BEARER,
                                 timeout=5).status_code == 201
        assert len(braze.calls(CAMPAIGN)) == 1, "a repeat of the same message is not sent again"


def test_a_huge_tags_list_is_refused_by_count(serve, sessionm):
    url = serve()
    data = json.dumps({"tags": ["t"] * 200_000}, separators=(",", ":")).encode()
    answer = requests.post(f"{url}/v1/users/u1/tags", data=data,
                           headers={**BEARER, "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"]["details"] == {"tags": ["at most 50 tags a call (got 200000); send the rest "
                                                          "in another call"]}
    assert sessionm.calls("/tags") == []


class TestWithABrazeClientLibrary:
    """`braze-client-p311` (PyPI: braze-client's Python 3.11 fork) reads `response["message"]` of every
    answer it does not raise on; without it a call failed with KeyError('message') instead of the
    library's own BrazeClientError carrying Braze's message (https://braze.com/docs/api/errors)."""

    def test_an_unknown_braze_path_is_the_librarys_error_not_a_key_error(self, serve):
        from braze.client import BrazeClient as LibraryClient
        from braze.client import BrazeClientError

        url = serve()
        client = LibraryClient(api_key="secret", api_url=url)
        with pytest.raises(BrazeClientError) as caught:  # /users/track: not a path this service relays
            client.user_track(attributes=[{"external_id": "u1", "points": 1}])
        assert "no such route" in str(caught.value)
        with pytest.raises(BrazeClientError) as caught:  # a wrong key: our 401, Braze-shaped
            LibraryClient(api_key="wrong", api_url=url).campaign_trigger_send(
                campaign_id="c", recipients=[{"external_user_id": "u1"}])
        assert "credentials" in str(caught.value)
