"""`wallet-proxy prewarm`: fill the shared Redis cache from a CSV, against a fake SessionM and a real Redis."""
from __future__ import annotations

import csv
import os
import re
import time
import uuid
from urllib.parse import quote

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings
from tests.fakes import Reply
from wallet_proxy import cli, services
from wallet_proxy.settings import parse

pytestmark = pytest.mark.usefixtures("quiet_fakes")

@pytest.fixture
def env(monkeypatch, tmp_path, sessionm):
    """The CLI's environment: SessionM Connect at the fake; the test adds Redis or not."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_")):
            monkeypatch.delenv(name)
    values = {"SESSIONM_CONNECT_URL": sessionm.url, "SESSIONM_CONNECT_AUTH": "Y29ubmVjdDpzZWNyZXQ=",
              "SESSIONM_RETAILER_ID": "retailer-1", "WALLET_PROXY_CLIENTS": "test:secret"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def users_file(tmp_path, users, name="send.csv") -> str:
    path = tmp_path / name
    path.write_text("user_id,email\n" + "".join(f"{u},{u}@example.com\n" for u in users), encoding="utf-8")
    return str(path)


def offers_calls(sessionm) -> list:
    return sessionm.calls(OFFERS_PATH + "$")


def test_refused_without_redis(env, tmp_path, sessionm, capsys):
    path = users_file(tmp_path, ["u1"])
    assert cli.main(["prewarm", path]) == 2
    assert "WALLET_PROXY_REDIS_URL" in capsys.readouterr().err
    assert offers_calls(sessionm) == []


def test_prewarmed_wallets_are_served_from_redis_without_calling_sessionm(env, tmp_path, sessionm, redis_url,
                                                                           app_for, capsys):
    env.setenv("WALLET_PROXY_REDIS_URL", redis_url)
    users = [f"pw-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    path = users_file(tmp_path, users + users[:2])
    assert cli.main(["prewarm", path, "--culture", "fr-fr", "--ttl", "3600", "--rate", "1000"]) == 0
    out = capsys.readouterr().out
    assert "5 prewarmed" in out and "2 duplicates skipped" in out
    calls = offers_calls(sessionm)
    assert sorted(c.json["user_id"] for c in calls) == sorted(users), "each user fetched once"
    assert {c.json["culture"] for c in calls} == {"fr-FR"}

    settings = make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url)
    store = services.build(settings).store
    entry = store.get(users[0], "fr-FR")
    assert entry is not None and entry.ttl == 3600
    assert abs(entry.fetched_at - time.time()) < 60

    client = app_for(settings, clock=time.time).test_client()
    response = client.get(f"/v1/wallets/{users[0]}?culture=fr-FR", headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200
    assert response.headers["Cache-Status"].startswith("wallet-proxy; hit")
    assert int(response.headers["Cache-Control"].split("max-age=")[1]) > 3000, "the prewarm ttl holds"
    assert len(offers_calls(sessionm)) == len(users), "the send was served from the prewarmed cache"


def test_unknown_users_and_failures_go_to_rejects(env, tmp_path, sessionm, redis_url, capsys):
    env.setenv("WALLET_PROXY_REDIS_URL", redis_url)
    attempts = {}

    def answer(recorded):
        user_id = recorded.json["user_id"]
        attempts[user_id] = attempts.get(user_id, 0) + 1
        if user_id.startswith("gone"):
            return Reply(200, fixture_json("get_user_offers.user_not_found.json"))
        if user_id.startswith("flaky") and attempts[user_id] == 1:
            return Reply(503, {"status": "error"})
        return Reply(200, fixture_json("get_user_offers.ok.json"))

    sessionm.on("POST", OFFERS_PATH, answer)
    tag = uuid.uuid4().hex[:8]
    path = users_file(tmp_path, [f"ok-{tag}", f"gone-{tag}", f"flaky-{tag}", "bad id"])
    assert cli.main(["prewarm", path, "--rate", "1000", "--backoff", "0.01"]) == 1
    assert "2 prewarmed" in capsys.readouterr().out
    with open(tmp_path / "send.rejects.csv", newline="", encoding="utf-8") as handle:
        rows = {r["user_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {f"gone-{tag}", "bad id"}
    assert rows[f"gone-{tag}"]["reason"].startswith("user_not_found")
    assert rows["bad id"]["line"] == "5"
    assert attempts[f"flaky-{tag}"] == 2 and attempts[f"gone-{tag}"] == 1


def test_unreachable_redis_is_not_counted_as_prewarmed(env, tmp_path, sessionm, capsys):
    from tests.conftest import free_port

    env.setenv("WALLET_PROXY_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    path = users_file(tmp_path, ["u1"])
    assert cli.main(["prewarm", path, "--rate", "1000", "--backoff", "0.01", "--max-attempts", "2"]) == 1
    assert "0 prewarmed" in capsys.readouterr().out
    with open(tmp_path / "send.rejects.csv", newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert "Redis" in row["reason"]


def test_sandbox_prewarm_needs_redis_too(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_")):
            monkeypatch.delenv(name)
    assert parse({}).sandbox
    monkeypatch.setenv("WALLET_PROXY_SANDBOX", "1")  # without it no command runs on the simulators
    assert cli.main(["prewarm", users_file(tmp_path, ["u1"])]) == 2
    assert "WALLET_PROXY_REDIS_URL" in capsys.readouterr().err


def readme_block_url() -> str:
    """The wallet URL of the README's first Connected Content block (the one a marketer copies)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\{% connected_content https://wallet\.example\.com(/v1/wallets/.+?) :basic_auth", readme)
    assert match, "the README's Connected Content block"
    return match.group(1)


def test_prewarm_from_the_language_column_warms_exactly_what_the_readme_block_reads(
        env, tmp_path, sessionm, redis_url, app_for, capsys):
    # Braze's export has the profile's `language`; the README's block sends culture={{${language}}}
    # (a bare code such as fr, or empty: en-US). Each prewarmed wallet must be the key that URL reads.
    env.setenv("WALLET_PROXY_REDIS_URL", redis_url)
    tag = uuid.uuid4().hex[:8]
    users = {f"fr-{tag}": "fr", f"none-{tag}": "", f"pt-{tag}": "pt-br", f"de-{tag}": "DE"}
    path = tmp_path / "send.csv"
    path.write_text("user_id,email,language\n" + "".join(f"{u},{u}@example.com,{lang}\n"
                                                          for u, lang in users.items()), encoding="utf-8")
    assert cli.main(["prewarm", str(path), "--ttl", "3600", "--rate", "1000"]) == 0
    assert "4 prewarmed" in capsys.readouterr().out
    assert sorted((c.json["user_id"], c.json["culture"]) for c in offers_calls(sessionm)) == sorted(
        [(f"fr-{tag}", "fr"), (f"none-{tag}", "en-US"), (f"pt-{tag}", "pt-BR"), (f"de-{tag}", "de")])

    template = readme_block_url()
    assert "{{${language} | url_param_escape}}" in template, template
    settings = make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url)
    client = app_for(settings, clock=time.time).test_client()
    for user_id, language in users.items():
        url = (template.replace("{{custom_attribute.${sessionm_user_id}}}", user_id)
               .replace("{{${language} | url_param_escape}}", quote(language, safe="")))
        response = client.get(url, headers={"Authorization": "Bearer secret"})
        assert response.status_code == 200, url
        assert response.headers["Cache-Status"].startswith("wallet-proxy; hit"), (url, language)
    assert len(offers_calls(sessionm)) == len(users), "every read of the send was a hit"


def test_repeated_culture_option_adds_cultures_to_every_row(env, tmp_path, sessionm, redis_url, capsys):
    env.setenv("WALLET_PROXY_REDIS_URL", redis_url)
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "send.csv"
    path.write_text(f"user_id,culture\na-{tag},fr\nb-{tag},\nbad-{tag},not a culture\n", encoding="utf-8")
    assert cli.main(["prewarm", str(path), "--culture", "en_us", "--culture", "es", "--rate", "1000"]) == 1
    calls = sorted((c.json["user_id"], c.json["culture"]) for c in offers_calls(sessionm))
    assert calls == sorted([(f"a-{tag}", "fr"), (f"a-{tag}", "en-US"), (f"a-{tag}", "es"),
                            (f"b-{tag}", "en-US"), (f"b-{tag}", "es")])
    with open(tmp_path / "send.rejects.csv", newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["user_id"] == f"bad-{tag}" and row["reason"].startswith("culture: must be a BCP 47")


def test_a_bad_culture_option_is_a_usage_error(env, tmp_path, sessionm, capsys):
    assert cli.main(["prewarm", users_file(tmp_path, ["u1"]), "--culture", "fr_FR!"]) == 2
    assert "--culture" in capsys.readouterr().err
    assert offers_calls(sessionm) == []
