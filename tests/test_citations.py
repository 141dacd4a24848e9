"""Every Braze or SessionM page the README and docs/ cite is a page someone read and listed here.

A behaviour the service relies on is stated with its page (README, "What Braze and SessionM do"). The
list below holds each page's title as the page gives it; an address not in it fails this test, so a
new citation comes with its page read and its title written down, and a mistyped address is caught.
"""
from __future__ import annotations

import re

from tests.conftest import ROOT

PAGES = {
    # Connected Content
    "braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/making_an_api_call":
        "Making an API call",
    "braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/local_connected_content_variables":
        "Local Connected Content variables",
    "braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/caching_responses":
        "Caching Connected Content responses",
    "braze.com/docs/user_guide/messaging/design_and_edit/personalize/connected_content/connected_content_retries":
        "Use retry logic for Connected Content",
    "braze.com/docs/user_guide/messaging/design_and_edit/personalize/connected_content/aborting_connected_content":
        "Abort Connected Content",
    "braze.com/docs/help/help_articles/api/webhook_connected_content_errors":
        "Troubleshooting webhook and Connected Content requests",
    # webhooks and campaigns
    "braze.com/docs/user_guide/message_building_by_channel/webhooks/creating_a_webhook":
        "Creating a webhook campaign",
    "braze.com/docs/user_guide/engagement_tools/campaigns/building_campaigns/rate-limiting": "Rate limiting",
    # REST API
    "braze.com/docs/api/api_limits": "Rate limits",
    "braze.com/docs/api/endpoints/user_data/post_user_track": "POST: Track users",
    "braze.com/docs/api/objects_filters/user_attributes_object": "User attributes object",
    "braze.com/docs/api/objects_filters/recipient_object": "Recipients object",
    "braze.com/docs/api/objects_filters/trigger_properties_object": "Trigger properties object",
    "braze.com/docs/api/objects_filters/context_object": "Context object",
    "braze.com/docs/api/objects_filters/canvas_entry_properties_object": "Canvas entry properties object",
    "braze.com/docs/user_guide/messaging/design_and_edit/personalize/sources/canvas_entry_properties":
        "Canvas entry properties",
    "braze.com/docs/user_guide/data_and_analytics/data_points": "Data points",
    "braze.com/docs/user_guide/data_and_analytics/custom_data/custom_attributes": "Custom attributes",
    # SessionM
    "braze.com/docs/partners/message_orchestration/channel_extensions/loyalty/sessionm": "SessionM Loyalty Platform",
    "docs.sessionm.com/developer/Tasks/Offers/t_look_up_offer.htm": "Look Up Offer",
    "docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm": "Generic Statuses and Errors",
}
CITED = re.compile(r"https?://(?:www\.)?((?:[a-z0-9-]+\.)*(?:braze|sessionm)\.com/[^\s)>\"'`\]]*)")


def page(url: str) -> str:
    """An address as the list keys it: no scheme, no `www.`, no anchor, query or trailing slash."""
    match = CITED.match(url)
    return re.split(r"[#?]", match.group(1))[0].rstrip("/.,;")


def cited() -> dict:
    """{page: [file, ...]} for every braze.com / sessionm.com address in the README and docs/."""
    found: dict = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for match in CITED.finditer(path.read_text()):
            found.setdefault(page(match.group(0)), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_cited_page_is_a_listed_page():
    pages = cited()
    assert len(pages) >= 15
    unknown = {url: files for url, files in pages.items() if url not in PAGES}
    assert unknown == {}, "read each page and add it to PAGES with its title"


def test_the_facts_section_cites_the_pages_the_templates_rest_on():
    """The rules the shipped templates follow (tests/template_rules.py) are stated with their pages."""
    readme = (ROOT / "README.md").read_text()
    facts = readme.split("## What Braze and SessionM do", 1)[1].split("<!-- /section:facts -->")[0]
    listed = {page(m.group(0)) for m in CITED.finditer(facts)}
    for needed in ("connected_content_retries", "webhook_connected_content_errors", "caching_responses",
                   "creating_a_webhook", "api_limits", "t_look_up_offer.htm"):
        assert any(url.endswith(needed) for url in listed), needed


def test_the_address_form_is_normalised():
    assert page("https://www.braze.com/docs/api/api_limits/#monitoring") == "braze.com/docs/api/api_limits"
    assert page("https://braze.com/docs/api/api_limits?x=1") == "braze.com/docs/api/api_limits"


# Claims no Braze page makes (issue 21 items 8-9): each was in this README once; none may come back.
UNCITED = {
    "Braze honours `Retry-After`": "its webhook page: 5 retries in 30 minutes with exponential backoff; "
                                   "Retry-After only 'can affect' the wait",
    "Braze reuses them for 75 s": "75 s is gunicorn's keep-alive; no Braze page says how long Braze "
                                  "keeps one",
    "above Braze's reuse": "no Braze page gives its connection reuse time",
    "hourly window ends": "Braze's rate limits page: the current window's end in UTC epoch seconds",
    "1 MB Connected Content limit": "Braze's caching page: a body over 1 MB is not cached; no hard limit",
    "only sets `__http_status_code__`": "cite the local Connected Content variables page's wording instead",
}


def test_no_claim_without_a_page_comes_back():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        found = {claim: why for claim, why in UNCITED.items() if claim in text}
        assert found == {}, f"{path.relative_to(ROOT)}: {found}"
