"""Every Liquid template wallet-proxy ships passes one rule checker (tests/template_rules.py).

The templates are collected where a marketer copies them from: the README's and docs' Markdown,
docs/templates/, and the preview page as a running service serves it over HTTP (its Examples list, its
ready Connected Content block and its playground's sample), not only from the files behind them.
Braze's pages for each rule are cited in tests/template_rules.py.
"""
from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import CLIENTS
from tests.template_rules import (Template, Violation, check, gallery, markdown_blocks,
                                  preview_examples)
from wallet_proxy.settings import parse

MEMBER = "member-24"  # a sandbox wallet on the test clock: 5 offers, 4490 points
OPS = ("ops", "ops-secret")
WALLET = ("test", "secret")
TRIGGER = {"offer_title": "Double espresso", "description": "Two shots on us.",
           "expiration_date": "2026-12-24T00:00:00Z", "point_award_amount": 50}
# What a send gives a template besides the wallet: a profile, and the properties of a trigger or Canvas.
CONTEXT = {"custom_attribute": {"sessionm_user_id": MEMBER}, "user_id": MEMBER, "language": "en",
           "first_name": "Ada", "api_trigger_properties": TRIGGER, "context": TRIGGER,
           "canvas_entry_properties": TRIGGER}


@pytest.fixture(scope="module")
def served():
    """The service in sandbox mode on loopback, and a real wallet answer from it."""
    from tests.conftest import NOW
    from tests.fakes import FakeClock, LiveServer
    from wallet_proxy import create_app

    server = LiveServer(create_app(parse({"WALLET_PROXY_CLIENTS": CLIENTS}), clock=FakeClock(NOW)))
    wallet = requests.get(f"{server.url}/v1/wallets/{MEMBER}", auth=WALLET, timeout=10).json()
    assert wallet["ok"] and wallet["offer_count"] > 0
    yield server.url, wallet
    server.close()


def served_preview(base: str) -> list[Template]:
    """The preview page's templates, read from what the service serves."""
    session = requests.Session()
    session.auth = OPS
    page = session.get(f"{base}/preview", params={"user_id": MEMBER}, timeout=10)
    assert page.status_code == 200, page.text[:300]
    text = page.text
    (block,) = re.findall(r'<pre class="code" id="cc-block">(.*?)</pre>', text, re.S)
    (sample,) = re.findall(r'<textarea id="template"[^>]*>(.*?)</textarea>', text, re.S)
    (src,) = re.findall(r'<select id="examples" data-src="([^"]+)"', text)
    examples = session.get(urljoin(base + "/", html.unescape(src)), timeout=10)
    assert examples.status_code == 200 and examples.json(), examples.text[:300]
    api = session.get(f"{base}/preview/api/wallet", params={"user_id": MEMBER}, timeout=10).json()
    return [Template("preview: Connected Content block", html.unescape(block)),
            Template("preview: playground sample", html.unescape(sample)),
            Template("preview API: connected_content", api["connected_content"]),
            *preview_examples(examples.json())]


def test_every_shipped_template_passes_the_rules(served):
    base, wallet = served
    shipped = [*markdown_blocks(), *gallery(), *served_preview(base)]
    names = [t.where for t in shipped]
    assert len(gallery()) >= 16 and sum(n.startswith("preview Examples") for n in names) == len(gallery())
    assert sum(n.startswith("README") for n in names) >= 5
    assert sum(":retry" in t.source for t in shipped) >= 4  # recipe 1 is shipped, and so checked
    problems = [str(v) for t in shipped for v in check(t, wallet, CONTEXT)]
    assert problems == []


# --- the checker itself: each rule is caught, and a good recipe passes

RETRYING = ("{% connected_content https://w.example.com/v1/wallets/{{${user_id}}} :basic_auth wallet_proxy "
            ":save wallet :no_cache :retry %}\n")


@pytest.mark.parametrize("guard", [
    "{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}",
    "{% if wallet == nil %}{% abort_message() %}{% endif %}",
    # Braze's own example, from its local Connected Content variables page
    "{% if wallet.__http_status_code__ != 200 %}{% abort_message('non-200') %}{% endif %}",
    "{% if wallet.error.code == 'upstream_unavailable' %}{% abort_message('down') %}{% endif %}",
    "{% unless wallet.offers.size > 0 %}{% abort_message('no offers') %}{% endunless %}",
])
def test_an_abort_on_the_failure_its_retry_covers_is_caught(served, guard):
    _, wallet = served
    (violation,) = check(Template("t", RETRYING + guard + "{{wallet.available_points}}"), wallet, CONTEXT)
    assert violation.rule == "abort-cancels-retry" and violation.where == "t"


def test_recipe_1_passes_and_a_content_guard_is_no_failure_guard(served):
    _, wallet = served
    recipe = RETRYING + ("{% if wallet.ok and wallet.offer_count == 0 %}{% abort_message('no offers') %}"
                         "{% endif %}{% if wallet.ok %}{{wallet.offer_count}} offers{% else %}Check the app."
                         "{% endif %}")
    assert check(Template("t", recipe), wallet, CONTEXT) == []


def test_retry_in_an_in_app_message_is_caught(served):
    _, wallet = served
    template = Template("x/in-app.liquid", RETRYING + "{{wallet.available_points}}", channel="in-app")
    assert [v.rule for v in check(template, wallet, CONTEXT)] == ["retry-in-app"]
    assert check(Template("x/push.liquid", template.source), wallet, CONTEXT) == []


def test_retry_beside_on_error_empty_is_caught(served):
    _, wallet = served
    source = RETRYING.replace("{{${user_id}}}", "{{${user_id}}}?on_error=empty") + "{{wallet.ok}}"
    assert [v.rule for v in check(Template("t", source), wallet, CONTEXT)] == ["retry-never-fires"]


def test_a_template_the_checker_cannot_exercise_is_reported(served):
    """An abort that fires on the real wallet too hides whether it tests the failure: say so."""
    _, wallet = served
    source = RETRYING + "{% if custom_attribute.vip != true %}{% abort_message('x') %}{% endif %}"
    (violation,) = check(Template("t", source), wallet, CONTEXT)
    assert violation.rule == "not-exercised"
    assert isinstance(violation, Violation) and "t: not-exercised" in str(violation)
