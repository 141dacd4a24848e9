"""Issue #20, "one rule, every door": each row of the issue's table, tried at EVERY door it applies to.

tests/test_inbound_admission.py proves each rule at the door where it was reported; this file is the
cross product (rule x door), so a door that was added later, or missed, fails here by name. Every case
goes through the door a real caller uses: HTTP to the service on loopback (fake SessionM and Braze on
loopback too), the installed `wallet-proxy` command for the CLI.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import time

import pytest
import requests

from tests.conftest import make_settings
from tests.fakes import Reply
from tests.test_inbound_admission import braze, track  # noqa: F401 (fixtures: Braze scripted to 201, /users/track)
from tests.test_inbound_admission import bare_env, command, secret_names
from wallet_proxy.web.auth import sign

CAMPAIGN = "/campaigns/trigger/send"
CANVAS = "/canvas/trigger/send"
FLAT = "/v1/braze/trigger"
BEARER = {"Authorization": "Bearer secret"}
OPS_BASIC = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
EXT_PATH = r"^/priv/v1/apps/core-key/external/users/.+$"
KEY = "sign-key"


@pytest.fixture
def serve(sessionm, braze, app_for, live):
    def build(braze_url=None, **env):
        sessionm.on("POST", r"/tags$", Reply(200, {"status": "ok"}))
        settings = make_settings(sessionm.url, core_url=sessionm.url, braze_url=braze_url or braze.url, **env)
        return live(app_for(settings, braze_options={"sleep": lambda s: None, "max_attempts": 2,
                                                     "timeout": 1.0}))

    return build


def body_of(door: str, **extra) -> dict:
    """A valid body for a trigger door, with `extra` as its properties."""
    if door == FLAT:
        return {"campaign_id": "c", "external_user_id": "u1", **extra}
    ident, props = ("campaign_id", "trigger_properties") if door == CAMPAIGN else ("canvas_id",
                                                                                    "canvas_entry_properties")
    return {ident: "c", "recipients": [{"external_user_id": "u1", props: extra}]}


TRIGGER_DOORS = [FLAT, CAMPAIGN, CANVAS]


# --- failed sign-ins are throttled, at every auth door ------------------------------------------------

def _wrong(kind: str, i: int) -> dict:
    if kind == "bearer":
        return {"Authorization": f"Bearer guess-{i}"}
    return {"Authorization": "Basic " + base64.b64encode(f"ops:guess-{i}".encode()).decode()}


AUTH_DOORS = [
    ("GET", "/v1/wallets/u-1", "basic"), ("GET", "/v1/wallets/u-1", "bearer"),
    ("GET", "/v1/wallets/u-1?view=sessionm", "bearer"), ("DELETE", "/v1/wallets/u-1", "bearer"),
    ("POST", "/v1/users/u-1/tags", "bearer"), ("POST", "/v1/users/u-1/sync", "basic"),
    ("POST", FLAT, "bearer"), ("POST", CAMPAIGN, "bearer"), ("POST", CANVAS, "basic"),
    ("GET", "/preview", "basic"), ("GET", "/preview/api/wallet?user_id=u-1", "bearer"),
    ("POST", "/preview/api/render", "basic"), ("GET", "/metrics", "bearer"), ("GET", "/metrics", "basic"),
]


@pytest.mark.parametrize("method, path, kind", AUTH_DOORS, ids=lambda v: str(v))
def test_every_auth_door_throttles_failed_sign_ins(serve, method, path, kind):
    url = serve()
    codes = [requests.request(method, f"{url}{path}", json={}, headers=_wrong(kind, i), timeout=5)
             for i in range(11)]
    assert [r.status_code for r in codes[:10]] == [401] * 10, [r.status_code for r in codes]
    assert codes[10].status_code == 429 and 1 <= int(codes[10].headers["Retry-After"]) <= 60


def test_the_preview_form_is_throttled_and_counts_with_the_api_doors(serve):
    url = serve()
    for i in range(5):
        requests.get(f"{url}/metrics", headers=_wrong("bearer", i), timeout=5)
    browser = requests.Session()
    statuses = []
    for i in range(6):
        page = browser.get(f"{url}/preview/login", timeout=5).text
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
        answer = browser.post(f"{url}/preview/login", data={"csrf_token": token, "name": "ops",
                                                            "secret": f"guess-{i}"},
                              allow_redirects=False, timeout=5)
        statuses.append(answer.status_code)
    assert statuses == [401] * 5 + [429], statuses
    assert requests.get(f"{url}/v1/wallets/u-1", headers=_wrong("basic", 99), timeout=5).status_code == 429


# --- bad JSON input is a 400 at every JSON POST door, before anything is sent -------------------------

JSON_DOORS = {
    "tags": ("/v1/users/u-1/tags", b'{"tags": ["a"], %s}'),
    "sync": ("/v1/users/u-1/sync", b'{%s}'),
    "flat": (FLAT, b'{"campaign_id": "c", "external_user_id": "u1", %s}'),
    "campaign": (CAMPAIGN, b'{"campaign_id": "c", "recipients": [{"external_user_id": "u1"}], %s}'),
    "canvas": (CANVAS, b'{"canvas_id": "c", "recipients": [{"external_user_id": "u1"}], %s}'),
    "render": ("/preview/api/render", b'{"user_id": "u-1", "template": "x", %s}'),
}
BAD = {
    "1e400": (b'"n": 1e400', "not finite"),
    "NaN": (b'"n": NaN', "not finite"),
    "surrogate": (b'"n": "\\ud800"', "unpaired surrogate"),
    "duplicate": (b'"n": 1, "n": 2', "same key twice"),
    "depth33": (b'"n": ' + b'{"a":' * 32 + b"1" + b"}" * 32, "nested deeper than 32"),
}


def _csrf_headers(url: str) -> dict:
    page = requests.get(f"{url}/preview", headers=OPS_BASIC, timeout=10).text
    return {**OPS_BASIC, "X-CSRF-Token": re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">',
                                                   page).group(1)}


def post_json_door(url, door, sessionm, braze, content_type="application/json", **kwargs):
    """POST to a JSON door as its caller does (the preview's render with its CSRF token); nothing may
    reach SessionM or Braze."""
    headers = _csrf_headers(url) if door == "render" else BEARER
    if "data" in kwargs:
        headers = {**headers, "Content-Type": content_type}
    before = len(sessionm.requests)
    answer = requests.post(f"{url}{JSON_DOORS[door][0]}", headers=headers, timeout=10, **kwargs)
    assert braze.requests == [] and len(sessionm.requests) == before, answer.text[:300]
    return answer


@pytest.mark.parametrize("bad", BAD, ids=str)
@pytest.mark.parametrize("door", JSON_DOORS, ids=str)
def test_every_json_door_refuses_bad_json_with_400(serve, sessionm, braze, door, bad):
    url = serve()
    fragment, reason = BAD[bad]
    answer = post_json_door(url, door, sessionm, braze, data=JSON_DOORS[door][1] % fragment)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]["message"], answer.text


@pytest.mark.parametrize("door", JSON_DOORS, ids=str)
def test_every_json_door_checks_type_and_size_before_reading(serve, sessionm, braze, door):
    """text/plain (a page of another origin may post it without asking) is 415; over 1 MiB is 413."""
    url = serve()
    template = JSON_DOORS[door][1]
    plain = post_json_door(url, door, sessionm, braze, "text/plain", data=template % b'"n": 1')
    assert plain.status_code == 415, plain.text
    big = post_json_door(url, door, sessionm, braze, data=template % (b'"n": "' + b"x" * 1_048_576 + b'"'))
    assert big.status_code == 413, big.text[:300]


NULLS = {
    "tags": {"tags": [None]},
    "flat": {"campaign_id": "c", "recipients": [None, {"external_user_id": "u"}]},
    "campaign": {"campaign_id": "c", "recipients": [None, {"external_user_id": "u", "canvas_entry_properties": {}}]},
    "canvas": {"canvas_id": "v", "recipients": [None, {"external_user_id": "u", "trigger_properties": {}}]},
    "render": {"user_id": None, "template": "x"},
    "sync": {"user_id": None},
}


@pytest.mark.parametrize("door", NULLS, ids=str)
def test_a_null_where_an_object_or_string_belongs_is_400_not_500(serve, sessionm, braze, door):
    url = serve()
    answer = post_json_door(url, door, sessionm, braze, json=NULLS[door])
    assert answer.status_code == 400, answer.text
    assert answer.json()["ok"] is False and answer.json()["error"]["message"]


# --- cheap refusal of oversized lists, at each list-taking door ----------------------------------------

@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_oversized_recipient_lists_are_refused_by_count(serve, braze, door):
    url = serve()
    ident = "canvas_id" if door == CANVAS else "campaign_id"
    data = json.dumps({ident: "c", "recipients": [{"braze_id": "1"}] * 61_000}, separators=(",", ":")).encode()
    started = time.monotonic()
    answer = requests.post(f"{url}{door}", data=data, headers={**BEARER, "Content-Type": "application/json"},
                           timeout=30)
    assert answer.status_code == 400 and "at most 2500 recipients" in answer.text, answer.text[:300]
    assert braze.requests == []
    assert time.monotonic() - started < 10  # generous: the claim is "not 61,000 validations", not speed


# --- dry_run: 1/0 in the query, true/false in the body, at every trigger door --------------------------

@pytest.mark.parametrize("query", ["?dry_run", "?dry_run=", "?dry_run=true", "?dry_run=2"])
@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_a_blank_or_unknown_dry_run_query_is_400_never_a_send(serve, braze, door, query):
    url = serve()
    answer = requests.post(f"{url}{door}{query}", json=body_of(door), headers=BEARER, timeout=5)
    assert answer.status_code == 400 and "dry_run" in answer.json()["error"]["message"], answer.text
    assert braze.requests == []


@pytest.mark.parametrize("query", ["?dryRun=1", "?DRY_RUN=1", "?Dry-Run=1", "?dryrun=1", "?DRYRUN=1"])
@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_a_misspelt_dry_run_query_is_400_never_a_send(serve, braze, door, query):
    """The body takes any spelling of dry_run as the flag; the query named only `dry_run`, so `?dryRun=1`
    was ignored: a caller asking for a dry run got a real send (201)."""
    url = serve()
    answer = requests.post(f"{url}{door}{query}", json=body_of(door), headers=BEARER, timeout=5)
    assert answer.status_code == 400 and "dry_run" in answer.text, answer.text
    assert braze.requests == []


@pytest.mark.parametrize("name", ["dryRun", "DRY_RUN", "dryrun", "DRYRUN", "Dry Run"])
@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_any_spelling_of_dry_run_in_the_body_is_the_flag(serve, braze, door, name):
    """Spelt without a separator (`dryrun`), the flag was a trigger property and the message was sent."""
    url = serve()
    answer = requests.post(f"{url}{door}", json={**body_of(door), name: True}, headers=BEARER, timeout=5)
    assert answer.status_code == 200 and answer.json()["dry_run"] is True, answer.text
    assert braze.requests == []


# a parameter given twice: which one counts was the framework's choice (the first), so
# `?dry_run=0&dry_run=1` sent for real and `?id_type=seed&id_type=external` read as seed
REPEATS = {
    "flat": ("POST", FLAT, "dry_run=0&dry_run=1"), "campaign": ("POST", CAMPAIGN, "dry_run=0&dry_run=1"),
    "canvas": ("POST", CANVAS, "dry_run=0&dry_run=1"),
    "wallet": ("GET", "/v1/wallets/u-1", "id_type=seed&id_type=external"),
    "wallet-sig": ("GET", "/v1/wallets/u-1", "sig=x&sig=y"),
    "sessionm": ("GET", "/v1/wallets/u-1", "view=sessionm&view=flat"),
    "tags": ("POST", "/v1/users/u-1/tags", "id_type=seed&id_type=external"),
    "sync": ("POST", "/v1/users/u-1/sync", "id_type=seed&id_type=external"),
}


@pytest.mark.parametrize("door", REPEATS, ids=str)
def test_a_query_parameter_given_twice_is_400_at_every_door(serve, braze, sessionm, door):
    method, path, query = REPEATS[door]
    url = serve()
    before = len(sessionm.requests)
    body = body_of(path) if path in TRIGGER_DOORS else {"tags": ["a"]} if "tags" in path else None
    answer = requests.request(method, f"{url}{path}?{query}", json=body, headers=BEARER, timeout=5)
    name = query.split("=")[0]
    assert answer.status_code == 400 and name in answer.json()["error"]["message"], answer.text
    assert braze.requests == [] and len(sessionm.requests) == before


@pytest.mark.parametrize("flag", ["true", 1, None, "1", ""])
@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_a_dry_run_in_the_body_is_a_json_boolean_or_400(serve, braze, door, flag):
    url = serve()
    answer = requests.post(f"{url}{door}", json={**body_of(door), "dry_run": flag}, headers=BEARER, timeout=5)
    assert answer.status_code == 400 and "dry_run" in answer.text, answer.text
    assert braze.requests == []


@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_dry_run_true_or_1_never_sends_at_any_trigger_door(serve, braze, door):
    url = serve()
    for how in ({"params": {"dry_run": "1"}, "json": body_of(door)},
                {"json": {**body_of(door), "dry_run": True}}):
        answer = requests.post(f"{url}{door}", headers=BEARER, timeout=5, **how)
        assert answer.status_code == 200, answer.text
    assert braze.requests == []


# --- the caller's api_key is never forwarded, in any spelling, from any door ---------------------------

SPELLINGS = {"api_key": "k1", "API_KEY": "k2", "apiKey": "k3", "Api Key": "k4", "api-key": "k5", "apikey": "k10",
             "APIKEY": "k11", "sessionm_apikey": "k12"}


@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_no_spelling_of_api_key_reaches_braze(serve, braze, door):
    url = serve()
    body = body_of(door, keep=1, nested={"ApiKey": "k6", "list": [{"API-KEY": "k7"}]}, **SPELLINGS)
    body.update({"API_KEY": "k8", "apiKey": "k9"})
    if door != FLAT:
        body["recipients"][0].update(SPELLINGS)
    answer = requests.post(f"{url}{door}", json=body, headers=BEARER, timeout=5)
    assert answer.status_code == 201, answer.text
    (sent,) = braze.requests
    assert secret_names(sent.json) == [], sent.json
    assert not re.search(rb'"k\d+"', sent.body), sent.body


# --- properties at most 50 KB, measured on the bytes sent, at every trigger door -----------------------

@pytest.mark.parametrize("door", TRIGGER_DOORS, ids=str)
def test_properties_are_measured_as_sent(serve, braze, door):
    """20,000 x é is 40 KB in UTF-8 (and 120 KB as \\u escapes): it passes, and reaches Braze as 40 KB;
    30,000 x é (60 KB as sent) is a 400."""
    url = serve()
    assert requests.post(f"{url}{door}", json=body_of(door, note="é" * 20_000), headers=BEARER,
                         timeout=5).status_code == 201
    (sent,) = braze.requests
    assert len(sent.body) < 50 * 1024 and "é".encode() in sent.body
    over = requests.post(f"{url}{door}", json=body_of(door, note="é" * 30_000), headers=BEARER, timeout=5)
    assert over.status_code == 400 and "50" in over.text, over.text
    assert len(braze.requests) == 1


# --- the Braze door answers like Braze: 404, 405, 401, 400, 413, 415 and 500 ----------------------------

def braze_shaped(answer, status):
    assert answer.status_code == status, answer.text[:300]
    body = answer.json()
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], list) and body["errors"]
    return body


@pytest.mark.parametrize("door", [CAMPAIGN, CANVAS], ids=str)
def test_every_answer_of_the_braze_door_is_braze_shaped(serve, door):
    url = serve()
    braze_shaped(requests.get(f"{url}{door}", headers=BEARER, timeout=5), 405)
    braze_shaped(requests.put(f"{url}{door}", json={}, headers=BEARER, timeout=5), 405)
    braze_shaped(requests.post(f"{url}{door}x", json={}, headers=BEARER, timeout=5), 404)
    braze_shaped(requests.post(f"{url}{door}", json={}, headers={"Authorization": "Bearer nope"}, timeout=5),
                 401)
    braze_shaped(requests.post(f"{url}{door}", json={}, headers=BEARER, timeout=5), 400)
    braze_shaped(requests.post(f"{url}{door}", data=b"{}", headers={**BEARER, "Content-Type": "text/plain"},
                               timeout=5), 415)
    braze_shaped(requests.post(f"{url}{door}", data=b'{"a": NaN}',
                               headers={**BEARER, "Content-Type": "application/json"}, timeout=5), 400)
    braze_shaped(requests.post(f"{url}{door}", data=b"x" * (1_048_576 + 10),
                               headers={**BEARER, "Content-Type": "application/json"}, timeout=10), 413)


@pytest.mark.parametrize("reply", [Reply(201, b""), Reply(201, b"<html>ok</html>"), Reply(201, {"dispatch_id": "d-9"})],
                         ids=["empty", "html", "no-message"])
@pytest.mark.parametrize("door", [CAMPAIGN, CANVAS], ids=str)
def test_a_2xx_from_braze_without_its_message_is_still_braze_shaped(serve, braze, door, reply):
    """A Braze client reads `message` of every answer it does not raise on (braze-client:
    KeyError('message')); Braze's own success body is {"dispatch_id", "message": "success"}
    (https://www.braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_campaigns/).
    A 2xx that reached us without one (an empty body, a proxy's page) was relayed as `{}`."""
    braze.on("POST", door, reply)
    url = serve()
    answer = requests.post(f"{url}{door}", json=body_of(door), headers=BEARER, timeout=5)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["message"] == "success" and isinstance(body["dispatch_id"], str), body
    assert len(braze.requests) == 1


@pytest.mark.parametrize("path", ["/users/track", "/messages/send", "/canvas/trigger/schedule/create"])
def test_other_braze_paths_are_braze_shaped_404s(serve, path):
    url = serve()
    braze_shaped(requests.post(f"{url}{path}", json={}, headers=BEARER, timeout=5), 404)


@pytest.mark.parametrize("door", [CAMPAIGN, CANVAS], ids=str)
def test_our_own_500_on_the_braze_door_is_braze_shaped(serve, monkeypatch, door):
    from wallet_proxy.sends import routes

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(routes, "plan_native", broken)
    url = serve()
    body = braze_shaped(requests.post(f"{url}{door}", json=body_of(door), headers=BEARER, timeout=5), 500)
    assert "a bug" not in json.dumps(body)


# --- a sig at every door where wallet data leaves, bound to the id and its id_type ---------------------

def _wallet_door(url, door, user, query):
    if door == "sync":
        return requests.post(f"{url}/v1/users/{user}/sync?{query}", headers=BEARER, timeout=5)
    view = "&view=sessionm" if door == "sessionm" else ""
    return requests.get(f"{url}/v1/wallets/{user}?{query}{view}", headers=BEARER, timeout=5)


@pytest.mark.parametrize("door", ["flat", "sessionm", "sync"])
def test_every_wallet_data_door_needs_a_sig_bound_to_id_and_id_type(serve, track, sessionm, door):
    sessionm.on("GET", EXT_PATH, Reply(200, {"status": "ok", "user": {"id": "seed-9"}}))
    url = serve(braze_url=track, WALLET_PROXY_SIGNING_KEY=KEY)
    # first good reads: a cached wallet must not be answered to an unsigned request either, nor to a
    # query string already seen with another id's sig (the wallet's hit path reuses parsed queries)
    for user in ("u-1", "u-2"):
        assert _wallet_door(url, door, user, f"sig={sign(KEY, user)}").status_code == 200
    assert _wallet_door(url, door, "u-2", f"sig={sign(KEY, 'u-1')}").status_code == 403
    for query in ("", f"sig={sign(KEY, 'u-2')}", "sig=", f"sig={sign(KEY, 'u-1')}&id_type=external",
                  f"sig={sign(KEY, 'u-1', 'external')}"):
        refused = _wallet_door(url, door, "u-1", query)
        assert refused.status_code == 403, (query, refused.text)
        assert refused.json()["error"]["code"] == "bad_signature"
        assert "wallet" not in refused.json() and "attributes" not in refused.json()
    assert sessionm.calls(EXT_PATH) == []
    assert _wallet_door(url, door, "u-1", f"sig={sign(KEY, 'u-1', 'external')}&id_type=external"
                        ).status_code == 200


# --- X-RateLimit-Remaining read as a number at every door that calls Braze ----------------------------

RATE_DOORS = {"flat": (FLAT, r"/campaigns/trigger/send$"), "campaign": (CAMPAIGN, r"/campaigns/trigger/send$"),
              "canvas": (CANVAS, r"/canvas/trigger/send$"), "sync": ("/v1/users/u-1/sync", r"/users/track$")}


@pytest.mark.parametrize("remaining, spent", [("0", True), ("0.0", True), ("-1", True), ("7", False)])
@pytest.mark.parametrize("door", RATE_DOORS, ids=str)
def test_a_spent_window_is_read_as_a_number_at_every_braze_door(serve, braze, door, remaining, spent):
    """A 503 whose `X-RateLimit-Remaining` is zero however written ("0", "0.0") means the window is spent
    until `X-RateLimit-Reset` (an hour away here): no retry before it; a 503 with budget left is retried
    (https://www.braze.com/docs/api/api_limits)."""
    from tests.conftest import NOW

    path, upstream = RATE_DOORS[door]
    braze.on("POST", upstream, Reply(503, {"message": "unavailable", "errors": ["x"]},
                                     headers={"X-RateLimit-Remaining": remaining,
                                              "X-RateLimit-Reset": str(int(NOW) + 3600)}))
    url = serve()
    body = {} if door == "sync" else body_of(path)
    answer = requests.post(f"{url}{path}", json=body, headers=BEARER, timeout=10)
    assert answer.status_code in (429, 503), answer.text
    calls = len(braze.calls(upstream))
    if spent:
        assert calls == 1 and int(answer.headers["Retry-After"]) > 60, (calls, dict(answer.headers))
    else:
        assert calls >= 2, calls


# --- tag ttl at most MAX_TTL at the webhook (as number and as text) ------------------------------------

@pytest.mark.parametrize("ttl", [0, -1, "0", 10**11, "99999999999", 1.5, True])
def test_the_tags_webhook_refuses_every_ttl_outside_the_range(serve, sessionm, ttl):
    url = serve()
    answer = requests.post(f"{url}/v1/users/u-1/tags", json={"tags": ["vip"], "ttl": ttl}, headers=BEARER,
                           timeout=5)
    assert answer.status_code == 400 and "ttl" in answer.text, answer.text
    assert sessionm.calls("/tags") == []


# --- no silent sandbox: the server's production entry and every CLI command ----------------------------

def _commands() -> list[list[str]]:
    """Every leaf command of the installed CLI, read from its own --help (so a new command is covered)."""
    found = []

    def walk(prefix):
        shown = subprocess.run(command(*prefix, "--help"), capture_output=True, text=True, timeout=60,
                               env=bare_env())
        choices = re.search(r"^\s*\{([a-z,_-]+)\}", shown.stdout, re.M)
        if not choices:
            found.append(prefix)
            return
        for name in choices.group(1).split(","):
            walk([*prefix, name])

    walk([])
    return found


ARGS = {("tags", "import"): ["users.csv", "--tag", "vip"], ("attributes", "sync"): ["users.csv"],
        ("prewarm",): ["users.csv"]}


def test_every_cli_command_but_serve_refuses_the_simulators_unless_asked(tmp_path):
    (tmp_path / "users.csv").write_text("user_id\nu1\n")
    commands = _commands()
    assert ["serve"] in commands and len(commands) >= 4, commands
    for leaf in commands:
        if leaf == ["serve"]:
            continue  # SPEC: the one development entry that falls back to the sandbox, and says so
        assert tuple(leaf) in ARGS, f"new command {leaf}: add it to this matrix"
        done = subprocess.run(command(*leaf, *ARGS[tuple(leaf)]), cwd=tmp_path, env=bare_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "WALLET_PROXY_SANDBOX=1" in done.stderr, (leaf, done.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["users.csv"], leaf


@pytest.mark.parametrize("leaf, configured", [
    (("attributes", "sync"), "connect"),  # Braze missing: must not write to the Braze simulator
    (("prewarm",), "braze"),              # Connect missing: must not warm made-up wallets
    (("tags", "import"), "connect"),      # Core missing: must not tag on the Core simulator
])
def test_a_command_missing_one_group_names_it_instead_of_simulating_it(tmp_path, sessionm, braze, leaf,
                                                                       configured):
    (tmp_path / "users.csv").write_text("user_id\nu1\n")
    groups = {"connect": {"SESSIONM_CONNECT_URL": sessionm.url, "SESSIONM_CONNECT_AUTH": "Y29ubmVjdDpzZWNyZXQ=",
                          "SESSIONM_RETAILER_ID": "retailer-1"},
              "braze": {"BRAZE_REST_URL": braze.url, "BRAZE_API_KEY": "braze-rest-key"}}
    done = subprocess.run(command(*leaf, *ARGS[leaf]), cwd=tmp_path, env=bare_env(**groups[configured]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert braze.requests == [] and sessionm.requests == []


def test_the_production_entry_refuses_to_start_on_the_simulators(tmp_path):
    import sys

    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=bare_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "WALLET_PROXY_SANDBOX=1" in done.stderr, done.stderr[-500:]
