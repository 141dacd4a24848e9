"""docs/templates/: every gallery template rendered by brazejs (real Connected Content calls) against the
sandbox service, and by the preview playground; the playground's example list matches the folder.

Braze namespaces (checked against braze.com): `api_trigger_properties` in API-triggered campaigns
(https://www.braze.com/docs/api/objects_filters/trigger_properties_object/); in a Canvas, `context` in
the current editor (https://www.braze.com/docs/api/objects_filters/context_object/) and
`canvas_entry_properties` in the original one
(https://www.braze.com/docs/api/objects_filters/canvas_entry_properties_object/).
"""
from __future__ import annotations

import base64
import importlib.util
import json
import re
from datetime import datetime

import pytest

from tests.conftest import CLIENTS, ROOT
from tests.template_rules import calls
from tests.test_brazejs import render, render_full, squash
from tests.test_preview_browser import browser, page_for  # noqa: F401  (fixtures)
from wallet_proxy.settings import parse

GALLERY = ROOT / "docs" / "templates"
STATIC = ROOT / "wallet_proxy" / "preview" / "static" / "gallery.json"
MEMBER = "member-24"  # a sandbox wallet on the test clock: 5 offers, 4490 points, one expiring in 6 days
ONLY_LATER = "member-4"  # one offer, expiring in 11 days
WALLET = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}
OPS = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
TRIGGER = {"offer_title": "Double espresso", "description": "Two shots on us.",
           "expiration_date": "2026-12-24T00:00:00Z", "point_award_amount": 50,
           "logo_url": "https://cdn.example.com/espresso.png"}


def builder():
    spec = importlib.util.spec_from_file_location("gallery_build", GALLERY / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sandbox():
    """The service in sandbox mode on the test clock, served on loopback (brazejs calls it over HTTP)."""
    from tests.conftest import NOW
    from tests.fakes import FakeClock, LiveServer
    from wallet_proxy import create_app

    app = create_app(parse({"WALLET_PROXY_CLIENTS": CLIENTS}), clock=FakeClock(NOW))
    server = LiveServer(app)
    yield app, server.url
    server.close()


def wallet(app, user_id: str, query: str = "") -> dict:
    return app.test_client().get(f"/v1/wallets/{user_id}{query}", headers=WALLET).get_json()


def source(name: str, base: str) -> str:
    return (GALLERY / name).read_text().replace("https://wallet.example.com", base)


def run(name: str, base: str, user_id: str = MEMBER, **context) -> dict:
    context.setdefault("custom_attribute", {"sessionm_user_id": user_id})
    context.setdefault("language", "en")
    result = render(source(name, base), **context)
    assert "error" not in result, result
    return result


def test_the_playgrounds_example_list_is_the_gallery():
    gallery = builder()
    assert STATIC.read_text() == gallery.render(), "run: .venv/bin/python docs/templates/build.py"
    listed = {example["file"] for example in json.loads(STATIC.read_text())}
    assert listed == set(gallery.every_template()), "a template is missing from build.py's CASES/CHANNELS"
    channels = {name.split("/")[1].rsplit(".liquid")[0] for name in listed}
    assert channels == {"email.html", "email.txt", "amp.html", "push", "in-app", "sms"}


@pytest.mark.node
class TestBrazejs:
    @pytest.mark.parametrize("name", ["wallet-list/email.html.liquid", "wallet-list/email.txt.liquid",
                                      "wallet-list/amp.html.liquid", "wallet-list/in-app.liquid"])
    def test_wallet_list(self, sandbox, name):
        app, base = sandbox
        expected = wallet(app, MEMBER, "?sort=expires_at")
        output = run(name, base)["output"]
        first = expected["offers"][0]["title"]
        assert first in output and (name.endswith("in-app.liquid") or "4490" in output), output
        if name.startswith("wallet-list/email") or name.startswith("wallet-list/amp"):
            assert all(o["title"] in output for o in expected["offers"])
        if name.endswith("amp.html.liquid"):
            assert "<html ⚡4email" in output and "<amp-img" in output and "<img" not in output

    @pytest.mark.parametrize("name", ["offer-expiring/push.liquid", "offer-expiring/sms.liquid",
                                      "offer-expiring/email.html.liquid"])
    def test_offer_expiring_soon(self, sandbox, name):
        app, base = sandbox
        (soon,) = wallet(app, MEMBER, "?expiring_within_days=7")["offers"]
        output = squash(run(name, base)["output"])
        day = datetime.strptime(soon["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
        assert soon["title"] in output and (day.strftime("%b %d") in output or day.strftime("%B %d") in output), \
            output
        if name.endswith("push.liquid"):
            assert output.startswith(f"{soon['expires_in_days']} days left:")
        if name.endswith("sms.liquid"):
            assert len(output) <= 160
        assert run(name, base, ONLY_LATER) == {"aborted": "no offer expiring this week"}

    @pytest.mark.parametrize("name", ["points-balance/push.liquid", "points-balance/sms.liquid",
                                      "points-balance/in-app.liquid"])
    def test_points_balance(self, sandbox, name):
        _, base = sandbox
        assert "4490 points" in run(name, base)["output"]
        assert run(name, base, "unknown-7").get("aborted"), "no balance, no message"

    @pytest.mark.parametrize("name", ["empty-wallet/email.html.liquid", "empty-wallet/push.liquid"])
    def test_empty_wallet_fallback(self, sandbox, name):
        app, base = sandbox
        first = wallet(app, MEMBER, "?sort=expires_at")["offers"][0]["title"]
        assert first in run(name, base)["output"]
        fallback = squash(re.sub(r"<[^>]+>", " ", run(name, base, "unknown-7")["output"]))
        assert fallback in ("Check the app for your latest rewards.", "Open the app to see your rewards.")

    @pytest.mark.parametrize("name", ["offer-issued/push.liquid", "offer-issued/email.html.liquid"])
    def test_offer_issued_reads_the_trigger_properties(self, sandbox, name):
        _, base = sandbox
        output = squash(run(name, base, api_trigger_properties=TRIGGER)["output"])
        assert "Double espresso" in output and "Dec 24" in output or "December 24" in output, output
        assert "5 offers" in output or "Also in your wallet" in output
        assert run(name, base) == {"aborted": "no offer in the trigger"}

    @pytest.mark.parametrize("name", ["canvas-properties/in-app.liquid", "canvas-properties/email.txt.liquid"])
    @pytest.mark.parametrize("namespace", ["context", "canvas_entry_properties"])
    def test_canvas_reads_context_or_canvas_entry_properties(self, sandbox, name, namespace):
        _, base = sandbox
        output = squash(run(name, base, **{namespace: TRIGGER})["output"])
        assert "Double espresso" in output and "4490 points" in output, output
        assert run(name, base) == {"aborted": "no offer in the canvas properties"}


RECIPE_1 = ["wallet-list/email.html.liquid", "wallet-list/email.txt.liquid", "wallet-list/amp.html.liquid"]
RECIPE_2 = ["wallet-list/in-app.liquid", "offer-expiring/push.liquid", "offer-expiring/sms.liquid",
            "offer-expiring/email.html.liquid", "points-balance/push.liquid", "points-balance/sms.liquid",
            "points-balance/in-app.liquid"]


def test_the_two_recipes_cover_the_gallery():
    """Each template that calls the wallet without properties to fall back on is one of the two recipes."""
    for name in RECIPE_1 + RECIPE_2:
        ((url, options),) = calls(source(name, ""))
        retry = ":retry" in options.split()
        expected = (True, False) if name in RECIPE_1 else (False, True)
        assert (retry, "on_error=empty" in url) == expected, name


@pytest.mark.node
class TestRecipesWhileSessionMFails:
    """Braze's :retry (retried up to 5 times, then the message is aborted) against the sandbox's fault
    switch: a `fault-500` user id makes SessionM answer 500, so wallet-proxy answers 503 (harness:
    tests/js/render.js, which applies Braze's abort precedence as its retries page states). A fresh
    service per test: the failures open its circuit breaker."""

    @pytest.fixture
    def sandbox(self):
        from tests.conftest import NOW
        from tests.fakes import FakeClock, LiveServer
        from wallet_proxy import create_app

        server = LiveServer(create_app(parse({"WALLET_PROXY_CLIENTS": CLIENTS}), clock=FakeClock(NOW)))
        yield None, server.url
        server.close()

    @pytest.mark.parametrize("name", RECIPE_1)
    def test_recipe_1_is_retried_not_aborted_at_the_first_failure(self, sandbox, name):
        _, base = sandbox
        result = render_full(source(name, base), custom_attribute={"sessionm_user_id": "fault-500-a"},
                             language="en")
        assert result == {"aborted": "connected content failed after 5 retries", "retries": 5}

    @pytest.mark.parametrize("name", RECIPE_1)
    def test_recipe_1_falls_back_for_a_user_sessionm_does_not_know(self, sandbox, name):
        _, base = sandbox
        result = render_full(source(name, base), custom_attribute={"sessionm_user_id": "unknown-7"},
                             language="en")
        assert result["retries"] == 0 and "Check the app for your latest rewards." in result["output"]

    @pytest.mark.parametrize("name", RECIPE_2)
    def test_recipe_2_aborts_at_once(self, sandbox, name):
        _, base = sandbox
        result = render_full(source(name, base), custom_attribute={"sessionm_user_id": "fault-500-a"},
                             language="en")
        assert result["retries"] == 0 and result.get("aborted") in ("wallet unavailable", "nothing to show",
                                                                     "no fresh balance"), result


def test_every_example_renders_in_the_playground(sandbox):
    """The preview page's playground (python-liquid) renders each example without an error."""
    app, _ = sandbox
    client = app.test_client()
    page = client.get(f"/preview?user_id={MEMBER}", headers=OPS).get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page).group(1)
    for example in json.loads(STATIC.read_text()):
        answer = client.post("/preview/api/render", headers={**OPS, "X-CSRF-Token": token},
                             json={"user_id": MEMBER, "culture": "en-US", "template": example["template"]})
        body = answer.get_json()
        assert answer.status_code == 200 and body["ok"], (example["file"], body)
        assert body["output"].strip() or body["aborted"], example["file"]


@pytest.mark.browser
def test_the_page_offers_each_example_and_renders_it_without_error(app_for, live, browser, page_for):
    """In real Chromium: the playground's Examples list holds the gallery; each renders without an error."""
    from tests.test_preview_browser import look_up, sign_in

    page = page_for(live(app_for(parse({}))))  # sandbox mode: demo:demo
    sign_in(page)
    look_up(page, MEMBER)
    examples = json.loads(STATIC.read_text())
    page.wait_for_selector(f"#examples option:nth-child({len(examples) + 1})", state="attached")
    assert page.locator("#examples option").all_text_contents()[1:] == [e["name"] for e in examples]
    for index, example in enumerate(examples):
        page.select_option("#examples", str(index))
        assert page.input_value("#template") == example["template"]
        page.click("#render-form button[type=submit]")
        page.wait_for_selector("#render-output:not([hidden]), #render-error:not([hidden])")
        assert page.locator("#render-error").is_hidden(), (example["file"],
                                                           page.locator("#render-error").text_content())
        assert page.locator("#render-output").text_content().strip(), example["file"]
    assert page.problems == []
