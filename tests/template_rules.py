"""One rule checker for every Liquid template wallet-proxy ships (README, docs/, the preview page).

Braze's rules it enforces, each from its page:

- `abort-cancels-retry`: "If a Connected Content call uses abort logic for the same condition as the
  retry logic, the abort logic takes precedence. This prevents any retries from being attempted."
  (https://www.braze.com/docs/user_guide/messaging/design_and_edit/personalize/connected_content/connected_content_retries/)
  A template whose call has `:retry` must not abort when that call fails.
- `retry-in-app`: "Connected Content `:retry` is not available for in-app messages." (same page,
  https://braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/connected_content_retries)
- `retry-never-fires`: `:retry` on a URL with `on_error=empty`: wallet-proxy then answers every failure
  with a 200, so Braze never retries (a dead option that reads as a safety net).

The abort rule is checked by rendering, not by reading the source: the template is rendered with
the preview's python-liquid playground (Braze's syntax and `abort_message`) once with a real wallet
bound to the call's `:save` variable, and once per failure as Braze may present it to the template (no
variable: Braze renders an empty string for a failed call; our error body, with and without
`__http_status_code__`, since Braze's page says the key is added for a JSON object and, in its newer
wording, only on a 2XX: https://www.braze.com/docs/user_guide/personalization_and_dynamic_content/
connected_content/local_connected_content_variables/). A template that aborts on a failure but not on
the real wallet tests the failure its `:retry` covers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wallet_proxy.preview.liquid import Playground, TemplateProblem

ROOT = Path(__file__).resolve().parent.parent
CALL = re.compile(r"\{%-?\s*connected_content\s+(.*?)-?%\}", re.S)
OPTION = re.compile(r"\s:[a-z_]")  # options start at the first ` :name` (a URL may hold `{{ a | b }}`)
RETRYABLE = (502, 503, 504)  # what wallet-proxy answers while SessionM fails (5xx: Braze's :retry)
IN_APP = "in-app"


@dataclass(frozen=True)
class Template:
    """One shipped template: where it comes from, its channel (`in-app` or None) and its source."""

    where: str
    source: str
    channel: str | None = None


@dataclass(frozen=True)
class Violation:
    """A broken rule: which template, which rule, and why."""

    where: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.rule}: {self.reason}"


def calls(source: str) -> list[tuple[str, str]]:
    """Each `connected_content` call as (URL, options)."""
    found = []
    for match in CALL.finditer(source):
        argument = match.group(1).strip()
        option = OPTION.search(argument)
        cut = option.start() if option else len(argument)
        found.append((argument[:cut], argument[cut:]))
    return found


def failures(code: int) -> list:
    """What a template may see in its `:save` variable after a call that failed with `code`."""
    body = {"ok": False, "error": {"code": "upstream_unavailable", "message": "SessionM is not answering"}}
    return [None, "", body, {**body, "__http_status_code__": code}]


def check(template: Template, wallet: dict, context: dict | None = None) -> list[Violation]:
    """Every rule `template` breaks. `wallet`: a real wallet answer (what a successful call saves);
    `context`: the profile and properties a send would give (so content guards pass)."""
    found = []
    retried = [(url, options) for url, options in calls(template.source) if ":retry" in options.split()]
    if not retried:
        return found
    if template.channel == IN_APP:
        found.append(Violation(template.where, "retry-in-app",
                               "in-app messages have no :retry in Braze; use on_error=empty and an abort"))
    for url, _ in retried:
        if "on_error=empty" in url:
            found.append(Violation(template.where, "retry-never-fires",
                                   "on_error=empty answers every failure with 200, so :retry never fires"))
    playground = Playground(max_seconds=5)
    context = dict(context or {})

    def aborted(state) -> str | None:
        try:
            return playground.render(template.source, {**context, "wallet": state}).aborted
        except TemplateProblem as exc:
            raise AssertionError(f"{template.where} does not render: {exc}") from None

    on_success = aborted({**wallet, "__http_status_code__": 200})
    if on_success is not None:
        found.append(Violation(template.where, "not-exercised",
                               f"aborts ({on_success!r}) even with a real wallet: give the checker a "
                               "context in which it sends"))
        return found
    for code in RETRYABLE:
        for state in failures(code):
            reason = aborted(state)
            if reason is not None:
                found.append(Violation(
                    template.where, "abort-cancels-retry",
                    f"aborts ({reason!r}) when its :retry call fails ({code}, saved as {state!r}): "
                    "Braze lets that abort cancel the retries; drop the abort (recipe 1) or :retry "
                    "(recipe 2)"))
                return found
    return found


# --- where the shipped templates are


def markdown_blocks(paths=None) -> list[Template]:
    """Every ```liquid block of the README and of docs/ (Markdown)."""
    found = []
    for path in paths or [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for n, match in enumerate(re.finditer(r"```liquid\n(.*?)```", text, re.S)):
            found.append(Template(f"{path.relative_to(ROOT)}#{n + 1}", match.group(1)))
    return found


def gallery() -> list[Template]:
    """docs/templates/<use case>/<channel>.liquid; the channel is in the file name."""
    return [Template(str(path.relative_to(ROOT)), path.read_text(),
                     IN_APP if path.name.startswith(IN_APP) else None)
            for path in sorted((ROOT / "docs" / "templates").glob("*/*.liquid"))]


def preview_examples(examples: list) -> list[Template]:
    """The preview page's Examples list as served ([{name, file, template}])."""
    return [Template(f"preview Examples: {item['name']}", item["template"],
                     IN_APP if "in-app" in item["name"] else None) for item in examples]
