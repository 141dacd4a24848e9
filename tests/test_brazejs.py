"""Connected Content templates rendered by brazejs (Braze-compatible Liquid) against the running service.

brazejs's `connected_content` tag makes real HTTP calls, with `:basic_auth` and `:save`, so these
tests show what a marketer's template renders, not what we think it renders.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings, need
from tests.fakes import Reply
from tests.template_rules import markdown_blocks

pytestmark = pytest.mark.node
JS = Path(__file__).parent / "js"
SECRETS = {"wallet_proxy": {"username": "braze", "password": "bz-secret"}}


def render_full(template: str, **context) -> dict:
    """Render with brazejs and Braze's `:retry` rules (tests/js/render.js).

    Returns {"output": …, "retries": n} or {"aborted": message, "retries": n}.
    """
    need("node", shutil.which("node") is not None, "apt-get install nodejs npm")
    need("brazejs", (JS / "node_modules" / "brazejs").is_dir(), "cd tests/js && npm ci")
    context.setdefault("__secrets", SECRETS)
    # Braze renders Liquid dates in UTC (a template converts with `time_zone`); node would use the
    # machine's zone, so the tests would pass or fail by where they run.
    done = subprocess.run(["node", str(JS / "render.js")], input=json.dumps({"template": template,
                                                                            "context": context}),
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "TZ": "UTC"})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def render(template: str, **context) -> dict:
    """Render with brazejs; returns {"output": …} or {"aborted": message}."""
    result = render_full(template, **context)
    result.pop("retries", None)
    return result


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture
def base(sessionm, app_for, live):
    return live(app_for(make_settings(sessionm.url, core_url=sessionm.url)))


EXAMPLE_HOST = "https://wallet.example.com"
# What a Braze profile gives the README's and docs' blocks.
PROFILE = {"custom_attribute": {"sessionm_user_id": "user-1"}, "user_id": "user-1", "language": "fr",
           "first_name": "Ada", "email_address": "ada@example.com"}


def liquid_blocks() -> list:
    """Every ```liquid block of the README and of docs/ (Markdown): (where, text)."""
    return [(block.where, block.source) for block in markdown_blocks()]


def recipe(marker) -> str:
    """The README block that `marker(text)` picks out (exactly one)."""
    (block,) = [text for where, text in liquid_blocks() if where.startswith("README") and marker(text)]
    return block


def retry_recipe() -> str:
    return recipe(lambda text: ":retry" in text)


def abort_recipe() -> str:
    return recipe(lambda text: "on_error=empty" in text and "abort_message" in text)


def test_the_readme_and_docs_have_liquid_blocks():
    assert len(liquid_blocks()) >= 3


SESSIONM_EXAMPLE_HOST = "https://sessionm-connect.example.com"  # the README's "before" block


@pytest.fixture
def stand_in(live, clock):
    """SessionM Connect as the sandbox simulates it, on loopback (the seed's direct call goes here)."""
    from wallet_proxy.sandbox import SimState, make_sandbox_app

    return live(make_sandbox_app(SimState(clock=clock)))


@pytest.mark.parametrize("where, block", liquid_blocks(), ids=[w for w, _ in liquid_blocks()])
def test_every_liquid_block_renders_against_the_service(base, sessionm, stand_in, where, block):
    """Each block a marketer may copy renders in brazejs against a running wallet-proxy."""
    block = block.replace(SESSIONM_EXAMPLE_HOST, stand_in)
    result = render_full(block.replace(EXAMPLE_HOST, base), **PROFILE)
    assert "output" in result or "aborted" in result, (where, result)
    if EXAMPLE_HOST + "/v1/wallets/" in block:
        assert sessionm.calls(OFFERS_PATH), f"{where} never reached the service"


def test_retry_recipe_renders_the_wallet(base, sessionm):
    result = render_full(retry_recipe().replace(EXAMPLE_HOST, base), **PROFILE)
    assert squash(result["output"]) == (
        "You have 1 offers and 100 points. Free medium coffee — expires in 33 days")
    assert result["retries"] == 0
    (call,) = sessionm.calls(OFFERS_PATH)
    assert call.json["user_id"] == "user-1" and call.json["culture"] == "fr"


def test_retry_recipe_retries_while_sessionm_fails(base, sessionm):
    sessionm.on("POST", OFFERS_PATH, [Reply(503, {}), Reply(500, {}),
                                      Reply(200, fixture_json("get_user_offers.ok.json"))])
    result = render_full(retry_recipe().replace(EXAMPLE_HOST, base), **PROFILE)
    assert result["retries"] == 2
    assert squash(result["output"]).startswith("You have 1 offers and 100 points.")


def test_retry_recipe_is_aborted_by_braze_only_after_its_retries(base, sessionm):
    sessionm.on("POST", OFFERS_PATH, Reply(503, {}))
    result = render_full(retry_recipe().replace(EXAMPLE_HOST, base), **PROFILE)
    assert result == {"aborted": "connected content failed after 5 retries", "retries": 5}


def test_retry_recipe_falls_back_for_an_unknown_user(base, sessionm):
    sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
    result = render_full(retry_recipe().replace(EXAMPLE_HOST, base),
                         **{**PROFILE, "custom_attribute": {"sessionm_user_id": "ghost"}})
    assert squash(result["output"]) == "Check the app for your latest rewards." and result["retries"] == 0


def test_abort_recipe_renders_the_wallet(base, sessionm):
    result = render_full(abort_recipe().replace(EXAMPLE_HOST, base), **PROFILE)
    assert squash(result["output"]) == (
        "You have 1 offers and 100 points. Free medium coffee — expires in 33 days")


@pytest.mark.parametrize("reply", [Reply(503, {}), Reply(200, {"status": "error",
                                                                "errors": {"code": "USER_NOT_FOUND"}})])
def test_abort_recipe_aborts_at_once(base, sessionm, reply):
    sessionm.on("POST", OFFERS_PATH, reply)
    result = render_full(abort_recipe().replace(EXAMPLE_HOST, base), **PROFILE)
    assert result == {"aborted": "wallet unavailable", "retries": 0}
    assert len(sessionm.calls(OFFERS_PATH)) == 1


def test_the_harness_applies_brazes_abort_precedence(base, sessionm):
    """The old README block (:retry and an abort on the same failure) never retried: Braze's rule."""
    sessionm.on("POST", OFFERS_PATH, [Reply(503, {}), Reply(200, fixture_json("get_user_offers.ok.json"))])
    old = ("{% connected_content " + base + "/v1/wallets/{{custom_attribute.${sessionm_user_id}}} "
           ":basic_auth wallet_proxy :save wallet :no_cache :retry %}"
           "{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}"
           "{{wallet.offer_count}}")
    assert render_full(old, **PROFILE) == {"aborted": "wallet unavailable", "retries": 0}


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


def test_the_preview_pages_block_is_a_recipe_that_aborts_without_retrying(base, sessionm):
    """The block the preview page hands out follows recipe 2: no :retry cancelled by its own abort."""
    from wallet_proxy.preview.routes import connected_content_block

    block = connected_content_block(base + "/", False) + "{{wallet.available_points}}"
    assert ":retry" not in block and "on_error=empty" in block
    assert render_full(block, **PROFILE) == {"output": "\n100", "retries": 0}
    sessionm.on("POST", OFFERS_PATH, Reply(503, {}))
    assert render_full(block, **{**PROFILE, "custom_attribute": {"sessionm_user_id": "other"}}) == {
        "aborted": "wallet unavailable", "retries": 0}
