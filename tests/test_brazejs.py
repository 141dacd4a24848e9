"""Connected Content templates rendered by brazejs (Braze-compatible Liquid) against the running service.

brazejs's `connected_content` tag makes real HTTP calls, with `:basic_auth` and `:save`, so these
tests show what a marketer's template renders, not what we think it renders.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import OFFERS_PATH, ROOT, fixture_json, make_settings, need
from tests.fakes import Reply

pytestmark = pytest.mark.node
JS = Path(__file__).parent / "js"
SECRETS = {"wallet_proxy": {"username": "braze", "password": "bz-secret"}}


def render(template: str, **context) -> dict:
    """Render with brazejs; returns {"output": …} or {"aborted": message}."""
    need("node", shutil.which("node") is not None, "apt-get install nodejs npm")
    need("brazejs", (JS / "node_modules" / "brazejs").is_dir(), "cd tests/js && npm ci")
    context.setdefault("__secrets", SECRETS)
    done = subprocess.run(["node", str(JS / "render.js")], input=json.dumps({"template": template,
                                                                            "context": context}),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture
def base(sessionm, app_for, live):
    return live(app_for(make_settings(sessionm.url, core_url=sessionm.url)))


def readme_block() -> str:
    """The first Liquid block of the README: the one marketers copy."""
    text = (ROOT / "README.md").read_text()
    return re.search(r"```liquid\n(.*?)```", text, re.S).group(1)


def test_readme_block_renders_the_wallet(base, sessionm):
    template = readme_block().replace("https://wallet.example.com", base)
    result = render(template, custom_attribute={"sessionm_user_id": "user-1"}, language="fr")
    assert squash(result["output"]) == (
        "You have 1 offers and 100 points. Free medium coffee — expires in 33 days")
    (call,) = sessionm.calls(OFFERS_PATH)
    assert call.json["user_id"] == "user-1" and call.json["culture"] == "fr"


def test_readme_block_aborts_for_an_unknown_user(base, sessionm):
    sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
    template = readme_block().replace("https://wallet.example.com", base)
    result = render(template, custom_attribute={"sessionm_user_id": "ghost"}, language="")
    assert result == {"aborted": "wallet unavailable"}


def test_on_error_empty_lets_the_template_fall_back(base, sessionm):
    sessionm.on("POST", OFFERS_PATH, Reply(503, {"error": "down"}))
    template = (
        "{% connected_content " + base + "/v1/wallets/{{${user_id}}}?on_error=empty "
        ":basic_auth wallet_proxy :save wallet :no_cache %}"
        "{% if wallet.ok %}{{wallet.offer_count}} offers"
        "{% else %}Check the app for your latest rewards ({{wallet.error.code}}).{% endif %}")
    result = render(template, user_id="u-77")
    assert squash(result["output"]) == "Check the app for your latest rewards (upstream_unavailable)."


def test_loop_with_sort_limit_and_names(base, sessionm):
    offers = []
    for n, (title, days) in enumerate([("Bravo", 20), ("Alpha", 3), ("Charlie", 9)]):
        item = dict(fixture_json("get_user_offers.ok.json")["payload"]["user_offers"][0])
        item.update(user_offer_id=f"uo-{n}", name=title, expiration_date=f"2026-12-{1 + days:02d}T10:00:00Z")
        offers.append(item)
    body = fixture_json("get_user_offers.ok.json")
    body["payload"]["user_offers"] = offers
    sessionm.on("POST", OFFERS_PATH, Reply(200, body))
    template = (
        "{% connected_content " + base + "/v1/wallets/u-1?sort=expires_at&limit=2 "
        ":basic_auth wallet_proxy :save wallet :no_cache %}"
        "{% if wallet.ok != true %}{% abort_message('no wallet') %}{% endif %}"
        "{% for offer in wallet.offers %}[{{offer.title}}|{{offer.group_name}}|{{offer.category_names[0]}}"
        "|{{offer.expires_in_days}}d|{{offer.expires_at | date: '%b %d'}}]{% endfor %}"
        " of {{wallet.groups[0].offer_count}}; stale={{wallet.stale}}; status={{wallet.__http_status_code__}}")
    result = render(template)
    assert squash(result["output"]) == (
        "[Alpha|All Offers|All Offers|6d|Dec 04][Charlie|All Offers|All Offers|12d|Dec 10] of 2; "
        "stale=false; status=200")


def test_signed_url_made_by_braze_filter_is_accepted(sessionm, app_for, live):
    base = live(app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="sig-key-1")))
    template = (
        "{% connected_content " + base + "/v1/wallets/{{${user_id}}}?sig={{${user_id} | hmac_sha256_hex: "
        "'sig-key-1'}} :basic_auth wallet_proxy :save wallet :no_cache %}"
        "{% if wallet.ok != true %}{% abort_message('unsigned') %}{% endif %}points={{wallet.available_points}}")
    assert render(template, user_id="cust-1") == {"output": "points=100"}
    forged = template.replace("'sig-key-1'", "'guess'")
    assert render(forged, user_id="cust-1") == {"aborted": "unsigned"}
