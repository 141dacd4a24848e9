"""The preview page end to end in real headless Chromium (Playwright), served over loopback."""
from __future__ import annotations

import copy
import os
import shutil

import pytest
import requests

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the `browser` fixture reports what is missing
    expect = None

from tests.conftest import OFFERS_PATH, ROOT, fixture_json, make_settings, need
from tests.fakes import Reply
from wallet_proxy.settings import parse

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE = "<script>alert('pwned')</script>"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Debian's /usr/bin/chromium; never `playwright install`)."""
    binary = shutil.which("chromium")
    need("chromium", binary is not None, "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_for(browser):
    """A fresh browser context (own cookies, clipboard allowed) for a base URL."""
    contexts = []

    def open_page(base_url, **options):
        context = browser.new_context(base_url=base_url, **options)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.problems = []
        # a 401 login page or a 422 template error is logged as a failed resource: expected, not a problem
        page.on("console", lambda m: page.problems.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on("dialog", lambda d: (page.problems.append("dialog: " + d.message), d.dismiss()))
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def sandbox(app_for, live):
    """The service in sandbox mode (no settings at all: demo:demo, simulated SessionM)."""
    return live(app_for(parse({})))


def sign_in(page, name="demo", secret="demo"):
    page.goto("/preview")
    page.fill("input[name=name]", name)
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("#lookup-form")


def look_up(page, user_id, culture="en-US"):
    page.fill("#user_id", user_id)
    page.fill("#culture", culture)
    page.click("#lookup-form button[type=submit]")
    page.wait_for_selector("#summary")


def render(page, template):
    page.fill("#template", template)
    page.click("#render-form button[type=submit]")
    # (wait_for_function would need eval, which the page's CSP rightly refuses)
    page.wait_for_selector("#render-output:not([hidden]), #render-error:not([hidden])")


def test_marketer_journey(sandbox, page_for, tmp_path):
    page = page_for(sandbox, viewport={"width": 1280, "height": 900})
    page.goto("/preview")
    assert page.locator("#login-form").is_visible()
    sign_in(page)
    look_up(page, "marketing-demo-42")

    # the cards are the wallet the Connected Content route serves
    served = requests.get(f"{sandbox}/v1/wallets/marketing-demo-42?culture=en-US", auth=("demo", "demo"),
                          timeout=5).json()
    titles = page.locator(".card .offer-title").all_text_contents()
    assert titles == [o["title"] for o in served["offers"]] and titles
    assert page.locator("#available-points").text_content() == str(served["available_points"])
    assert page.locator("#status").text_content() in ("fresh", "cached")
    first = served["offers"][0]
    card = page.locator(".card").first
    assert f"Expires in {first['expires_in_days']} days" in card.locator(".expiry").text_content()
    assert first["group_name"] in card.locator(".chips").text_content()
    assert first["category_names"][0] in card.locator(".chips").text_content()

    # click a field of the JSON tree: its Liquid path lands in the clipboard
    page.click('#tree button.leaf[data-path="wallet.offers[0].title"]')
    expect(page.locator("#copied")).to_have_text("Copied {{wallet.offers[0].title}}")
    assert page.evaluate("navigator.clipboard.readText()") == "{{wallet.offers[0].title}}"
    page.click('#tree .key[data-path="wallet.offers"]')  # a container's path is copied, not toggled
    expect(page.locator("#copied")).to_have_text("Copied {{wallet.offers}}")
    assert page.evaluate("navigator.clipboard.readText()") == "{{wallet.offers}}"
    page.click("button[data-tree=collapse]")
    assert not page.locator('#tree button.leaf[data-path="wallet.offers[0].title"]').is_visible()
    page.click("button[data-tree=expand]")
    assert page.locator('#tree button.leaf[data-path="wallet.offers[0].title"]').is_visible()

    # the ready Connected Content block names this deployment
    block = page.locator("#cc-block").text_content()
    assert block.startswith(f"{{% connected_content {sandbox}/v1/wallets/")
    page.click("button[data-copy-target=cc-block]")
    expect(page.locator("#toast")).to_have_text("Copied the block")
    assert page.evaluate("navigator.clipboard.readText()") == block

    # a template rendered server-side against this user's wallet
    render(page, "{{wallet.offers[0].title}} | {{wallet.offer_count}} | {{${user_id}}} | {{'hey' | md5}}")
    assert page.locator("#render-output").is_visible()
    assert page.locator("#render-output").text_content() == \
        f"{first['title']} | {served['offer_count']} | marketing-demo-42 | 6057f13c496ecf7fd777ceb9e79ae285"

    # a syntax error shows its line and reason, and the page keeps working
    render(page, "Hello\n{% for offer in wallet.offers %}\n{{offer.title}}")
    error = page.locator("#render-error")
    assert error.is_visible() and not page.locator("#render-output").is_visible()
    assert "Syntax error. Line 2" in error.text_content() and "endfor" in error.text_content()

    render(page, "{{wallet.available_points}}")
    assert page.locator("#render-output").text_content() == str(served["available_points"])
    assert page.problems == []  # no CSP violation, script error or dialog

    page.locator("#playground").scroll_into_view_if_needed()
    render(page, "{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}"
                 "Hi! You have {{wallet.available_points}} points.\n"
                 "{% for offer in wallet.offers limit:2 %}- {{offer.title}}, expires in "
                 "{{offer.expires_in_days}} days\n{% endfor %}")
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("#toast")).to_be_hidden()
    # the README's screenshot is refreshed on demand only, so a test run leaves the tree clean
    shot = ROOT / "docs" / "preview.png"
    if os.environ.get("WALLET_PROXY_SCREENSHOT") != "1" and shot.exists():
        shot = tmp_path / "preview.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_readable_on_a_phone(sandbox, page_for):
    page = page_for(sandbox, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(page)
    look_up(page, "phone-user")
    assert page.locator(".card").count() >= 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    box = page.locator(".card").first.bounding_box()
    assert box["width"] > 300  # one card per row, full width


def test_hostile_offer_names_render_as_text(sessionm, app_for, live, page_for):
    body = copy.deepcopy(fixture_json("get_user_offers.ok.json"))
    body["payload"]["user_offers"][0].update(name=HOSTILE, description='<img src=x onerror="alert(1)">')
    sessionm.on("POST", OFFERS_PATH, Reply(200, body))
    base = live(app_for(make_settings(sessionm.url)))
    page = page_for(base, http_credentials={"username": "ops", "password": "ops-secret"})
    page.goto("/preview?login=basic&user_id=u-1")  # the browser's Basic prompt instead of the form
    assert page.locator(".offer-title").first.text_content() == HOSTILE
    assert page.locator(".description").first.text_content() == '<img src=x onerror="alert(1)">'
    assert page.locator(".card img[src=x]").count() == 0
    render(page, "{{wallet.offers[0].title}}")
    assert page.locator("#render-output").text_content() == HOSTILE
    assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert not any(p.startswith("dialog") for p in page.problems)


def test_lookup_errors_are_shown_not_crashed(sandbox, page_for):
    page = page_for(sandbox)
    sign_in(page)
    look_up(page, "unknown-someone")
    assert "user_not_found" in page.locator("#lookup-error").text_content()
    page.fill("#user_id", "bad id!")
    page.click("#lookup-form button[type=submit]")
    assert "user_id must be" in page.locator("#form-error").text_content()
